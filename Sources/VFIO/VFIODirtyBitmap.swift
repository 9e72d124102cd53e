/// A dirty-page bitmap as the kernel writes it: bit `i` (word `i / 64`, bit `i % 64`, least
/// significant first) is the page at `iova + i * pageSize`. The three dirty-tracking interfaces
/// (device DMA logging, type1 `GET_BITMAP`, iommufd `GET_DIRTY_BITMAP`) all use this layout.
public struct VFIODirtyBitmap: Sendable, Hashable {
    /// The first IOVA the bitmap covers.
    public var iova: UInt64
    /// The bytes of IOVA space it covers (a multiple of `pageSize`).
    public var length: UInt64
    /// The bytes one bit stands for (a power of two).
    public var pageSize: UInt64
    /// The bits, 64 pages a word; exactly enough words for `length / pageSize` pages.
    public var words: [UInt64]

    public init(iova: UInt64, length: UInt64, pageSize: UInt64, words: [UInt64]) {
        (self.iova, self.length, self.pageSize, self.words) = (iova, length, pageSize, words)
    }

    /// The IOVA of every set bit inside the range, ascending.
    public var dirtyAddresses: [UInt64] {
        var addresses: [UInt64] = []
        let pages = pageSize == 0 ? 0 : length / pageSize
        for (index, word) in words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                let page = UInt64(index) &* 64 &+ UInt64(bits.trailingZeroBitCount)
                bits &= bits &- 1
                guard page < pages else { break }
                addresses.append(iova &+ page &* pageSize)
            }
        }
        return addresses
    }

    /// The number of set bits inside the range.
    public var dirtyPageCount: Int { dirtyAddresses.count }

    /// Checks a bitmap request before anything is allocated or sent: `pageSize` a power of two
    /// (at least `minimumPageSize`), `iova` and `length` multiples of it, `length` non-zero,
    /// `iova + length` without overflow, and a bitmap of at most `maxBytes`. Returns the number
    /// of u64 words the kernel will write, or why the request is refused.
    public static func wordCount(
        iova: UInt64, length: UInt64, pageSize: UInt64, minimumPageSize: UInt64 = 1, maxBytes: UInt64
    ) -> Result<Int, BitmapRequestError> {
        guard pageSize >= minimumPageSize, pageSize.nonzeroBitCount == 1 else {
            return .failure(.init("page size \(pageSize) is not a power of two of at least \(minimumPageSize)"))
        }
        guard length > 0, iova % pageSize == 0, length % pageSize == 0 else {
            return .failure(
                .init("range 0x\(String(iova, radix: 16))+0x\(String(length, radix: 16)) is empty or not aligned to \(pageSize)"))
        }
        guard !iova.addingReportingOverflow(length).overflow else {
            return .failure(.init("range 0x\(String(iova, radix: 16))+0x\(String(length, radix: 16)) overflows 64 bits"))
        }
        let pages = length / pageSize
        let words = pages / 64 + (pages % 64 == 0 ? 0 : 1)
        let (bytes, overflow) = words.multipliedReportingOverflow(by: 8)
        guard !overflow, bytes <= maxBytes, words <= UInt64(Int.max) else {
            return .failure(.init("a bitmap of \(pages) pages needs \(words) words, over the limit of \(maxBytes) bytes"))
        }
        return .success(Int(words))
    }

    /// Splits `[iova, iova + length)` into pieces whose bitmaps fit `maxBytes` each (the type1
    /// `max_dirty_bitmap_size`). `iova`/`length` must already be aligned to `pageSize`.
    public static func chunks(iova: UInt64, length: UInt64, pageSize: UInt64, maxBytes: UInt64) -> [(iova: UInt64, length: UInt64)] {
        guard pageSize > 0, maxBytes >= 8 else { return [] }
        // Whole words only, so every chunk but the last covers a multiple of 64 pages. `maxBytes`
        // may be the kernel's `max_dirty_bitmap_size`, any u64: both products are checked.
        let (pages, pagesOverflow) = (maxBytes / 8).multipliedReportingOverflow(by: 64)
        let (span, overflow) = pages.multipliedReportingOverflow(by: pageSize)
        let chunk = pagesOverflow || overflow ? UInt64.max - UInt64.max % pageSize : span
        var pieces: [(UInt64, UInt64)] = []
        var offset: UInt64 = 0
        while offset < length {
            let size = min(chunk, length - offset)
            pieces.append((iova &+ offset, size))
            offset &+= size
        }
        return pieces
    }

    /// Why a bitmap request was refused before it was sent.
    public struct BitmapRequestError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}
