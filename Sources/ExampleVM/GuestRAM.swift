import MigrationCore
import Synchronization

/// One RAM block of the example guest, as QEMU names them ("pc.ram").
public struct RAMBlockLayout: Sendable, Hashable {
    public var name: String
    /// Size in bytes, a multiple of the page size.
    public var size: Int

    public init(name: String, size: Int) { (self.name, self.size) = (name, size) }
}

/// Guest memory with a dirty-page bitmap: what a live RAM migration moves.
///
/// Pages are written by the guest workload and by device DMA, and read by the migration
/// thread; one lock per RAM makes each page copy atomic with respect to those writes (a real
/// VMM relies on dirty logging instead; the effect on the stream is the same).
///
/// Guest-physical layout: the blocks lie one after the other from address 0, in ``layout``
/// order (``guestRanges``). The CPU's writes (``guestWrite(block:page:seed:)``) mark their
/// page dirty; a device's DMA writes (``dmaWrite(hostAddress:bytes:)``) do not, as on real
/// hardware: the migration learns of them from dirty tracking and merges them with
/// ``mergeDirty(_:)``.
public final class GuestRAM: @unchecked Sendable {
    // @unchecked: the page memory is raw pointers the compiler cannot follow; every access to
    // it happens inside `state`'s lock, and the memory lives until deinit.
    public static let pageSize = 4096

    public let layout: [RAMBlockLayout]
    /// Each block's guest-physical range.
    public let guestRanges: [GuestMemoryRange]
    private let blocks: [UnsafeMutableRawBufferPointer]
    private let state: Mutex<DirtyState>

    private struct DirtyState {
        var dirty: [[UInt64]]
        var count = 0

        mutating func set(block: Int, page: Int) -> Bool {
            let (w, bit) = (page / 64, UInt64(page % 64))
            guard dirty[block][w] & (1 << bit) == 0 else { return false }
            dirty[block][w] |= 1 << bit
            count += 1
            return true
        }
    }

    /// Allocates zeroed memory for `layout`; refuses block sizes that are not whole pages.
    public init(layout: [RAMBlockLayout]) throws {
        var ranges: [GuestMemoryRange] = []
        var next: UInt64 = 0
        for block in layout {
            guard block.size > 0, block.size % Self.pageSize == 0, block.name.utf8.count <= 255 else {
                throw ExampleVMError.badLayout(
                    "block \"\(block.name)\" of \(block.size) bytes: sizes must be whole 4 KiB pages, names at most 255 bytes")
            }
            ranges.append(GuestMemoryRange(start: next, length: UInt64(block.size)))
            next += UInt64(block.size)
        }
        self.layout = layout
        self.guestRanges = ranges
        self.blocks = layout.map {
            let mem = UnsafeMutableRawBufferPointer.allocate(byteCount: $0.size, alignment: Self.pageSize)
            mem.initializeMemory(as: UInt8.self, repeating: 0)
            return mem
        }
        self.state = Mutex(DirtyState(dirty: layout.map { [UInt64](repeating: 0, count: ($0.size / Self.pageSize + 63) / 64) }))
    }

    deinit { blocks.forEach { $0.deallocate() } }

    public var totalBytes: Int { layout.reduce(0) { $0 + $1.size } }

    public func pageCount(block: Int) -> Int { layout[block].size / Self.pageSize }

    /// Number of pages dirtied and not yet sent.
    public var dirtyPages: Int { state.withLock { $0.count } }

    /// Marks every page dirty (the first pass of a migration sends everything).
    public func markAllDirty() {
        state.withLock { s in
            s.count = 0
            for b in layout.indices {
                let pages = pageCount(block: b)
                for w in s.dirty[b].indices {
                    let bits = min(64, pages - w * 64)
                    s.dirty[b][w] = bits == 64 ? ~0 : (1 << UInt64(bits)) - 1
                }
                s.count += pages
            }
        }
    }

    /// The guest writes `page` of `block`: fills it from `seed` and marks it dirty.
    public func guestWrite(block: Int, page: Int, seed: UInt64) {
        state.withLock { s in
            Self.fill(blocks[block], page: page, seed: seed)
            _ = s.set(block: block, page: page)
        }
    }

    /// Fills a page with a xorshift sequence from `seed`.
    static func fill(_ memory: UnsafeMutableRawBufferPointer, page: Int, seed: UInt64) {
        var x = seed | 1
        let bytes = UnsafeMutableRawBufferPointer(rebasing: memory[page * pageSize..<(page + 1) * pageSize])
        for i in 0..<(pageSize / 8) {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            bytes.storeBytes(of: x, toByteOffset: i * 8, as: UInt64.self)
        }
    }

    // MARK: Guest-physical addresses and device DMA

    /// The block and page holding `guestAddress`, or nil outside guest RAM.
    public func locate(guestAddress: UInt64) -> (block: Int, page: Int)? {
        for (b, range) in guestRanges.enumerated() where range.contains(guestAddress) {
            return (b, Int((guestAddress - range.start) / UInt64(Self.pageSize)))
        }
        return nil
    }

    /// Each block's memory as the host sees it (what a VMM maps for DMA: IOVA = guest-physical
    /// address, vaddr = this): (base address, length).
    public var hostRanges: [(base: UInt, length: Int)] {
        blocks.map { (UInt(bitPattern: $0.baseAddress), $0.count) }
    }

    /// A device writes `bytes` at host address `hostAddress` by DMA (the simulator's write
    /// through its IOMMU mapping). The range must lie inside one block; it is written under the
    /// RAM's lock and marked dirty nowhere (device DMA bypasses the CPU's dirty log).
    /// - Returns: false, writing nothing, when the range is not inside guest RAM.
    @discardableResult
    public func dmaWrite(hostAddress: UInt, bytes: UnsafeRawBufferPointer) -> Bool {
        for memory in blocks {
            let base = UInt(bitPattern: memory.baseAddress)
            guard hostAddress >= base, hostAddress - base < UInt(memory.count),
                UInt(memory.count) - (hostAddress - base) >= UInt(bytes.count)
            else { continue }
            let offset = Int(hostAddress - base)
            state.withLock { _ in
                UnsafeMutableRawBufferPointer(rebasing: memory[offset..<offset + bytes.count]).copyMemory(from: bytes)
            }
            return true
        }
        return false
    }

    /// A device writes `bytes` at guest-physical `guestAddress` by DMA (as
    /// ``dmaWrite(hostAddress:bytes:)``, through the 1:1 IOVA mapping).
    @discardableResult
    public func dmaWrite(guestAddress: UInt64, bytes: UnsafeRawBufferPointer) -> Bool {
        guard let (block, _) = locate(guestAddress: guestAddress) else { return false }
        let offset = guestAddress - guestRanges[block].start
        guard UInt64(blocks[block].count) - offset >= UInt64(bytes.count) else { return false }
        return dmaWrite(hostAddress: UInt(bitPattern: blocks[block].baseAddress) + UInt(offset), bytes: bytes)
    }

    /// Merges the pages dirty-page tracking reported into the dirty bitmap, so the next passes
    /// send them again. Bitmaps come from devices and kernels: every address is checked against
    /// guest RAM, and a tracking page larger than ours dirties each of our pages it covers.
    /// - Returns: the pages newly marked dirty, and the reported pages outside guest RAM
    ///   (ignored).
    @discardableResult
    public func mergeDirty(_ bitmaps: [DirtyPageBitmap]) -> (newlyDirty: Int, outside: Int) {
        var newly = 0
        var outside = 0
        let ramEnd = guestRanges.last?.end ?? 0
        state.withLock { s in
            for bitmap in bitmaps where bitmap.pageSize > 0 {
                bitmap.forEachDirtyPage { address in
                    // The tracking page [address, address + span) may cover several of ours.
                    let span = max(bitmap.pageSize, 1)
                    let last = address.addingReportingOverflow(span - 1)
                    var a = address
                    var any = false
                    while true {
                        if let (block, page) = locate(guestAddress: a) {
                            any = true
                            if s.set(block: block, page: page) { newly += 1 }
                        }
                        // Bounded by guest RAM however large the tracking page claims to be.
                        let (next, overflow) = (a / UInt64(Self.pageSize) + 1).multipliedReportingOverflow(by: UInt64(Self.pageSize))
                        guard !overflow, next < ramEnd, !last.overflow, next <= last.partialValue else { break }
                        a = next
                    }
                    if !any { outside += 1 }
                }
            }
        }
        return (newly, outside)
    }

    // MARK: Migration

    /// Takes up to `max` dirty pages, clearing their bits, and copies each into `visit`'s
    /// buffer under the lock. Pages are visited in address order, block by block.
    public func takeDirtyPages(max: Int, _ visit: (_ block: Int, _ page: Int, _ bytes: UnsafeRawBufferPointer) throws -> Void) throws
        -> Int
    {
        var taken = 0
        for b in layout.indices where taken < max {
            // The word count comes from the layout (immutable), not from the bitmap, which the
            // workload writes: every read of the bitmap happens under the lock.
            for w in 0..<(pageCount(block: b) + 63) / 64 where taken < max {
                while taken < max {
                    let tookOne: Bool = try state.withLock { s throws in
                        let word = s.dirty[b][w]
                        if word == 0 { return false }
                        let bit = word.trailingZeroBitCount
                        let page = w * 64 + bit
                        s.dirty[b][w] &= ~(1 << UInt64(bit))
                        s.count -= 1
                        try visit(b, page, UnsafeRawBufferPointer(rebasing: blocks[b][page * Self.pageSize..<(page + 1) * Self.pageSize]))
                        return true
                    }
                    if !tookOne { break }
                    taken += 1
                }
            }
        }
        return taken
    }

    /// Writes a received page (destination side).
    public func load(block: Int, page: Int, bytes: UnsafeRawBufferPointer) {
        state.withLock { _ in
            UnsafeMutableRawBufferPointer(rebasing: blocks[block][page * Self.pageSize..<(page + 1) * Self.pageSize])
                .copyMemory(from: bytes)
        }
    }

    /// Fills a received zero page (destination side).
    public func loadFill(block: Int, page: Int, byte: UInt8) {
        _ = state.withLock { _ in
            UnsafeMutableRawBufferPointer(rebasing: blocks[block][page * Self.pageSize..<(page + 1) * Self.pageSize])
                .initializeMemory(as: UInt8.self, repeating: byte)
        }
    }

    /// A 64-bit digest of all memory, to compare source and destination.
    public func digest() -> UInt64 {
        state.withLock { _ in
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for block in blocks {
                let words = block.bindMemory(to: UInt64.self)
                for w in words {
                    h = (h ^ w) &* 0x0000_0100_0000_01B3
                    h ^= h >> 29
                }
            }
            return h
        }
    }
}

/// Errors of the example VM.
public enum ExampleVMError: Error, Sendable, Equatable, CustomStringConvertible {
    case badLayout(String)
    case badRAMSection(offset: Int, reason: String)

    public var description: String {
        switch self {
        case .badLayout(let s): "example VM layout: \(s)"
        case .badRAMSection(let o, let r): "ram section at byte \(o): \(r)"
        }
    }
}
