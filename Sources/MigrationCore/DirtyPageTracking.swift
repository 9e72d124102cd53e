// The vocabulary of dirty-page tracking that MigrationCore shares with the VFIO adapters
// (VFIOPCIHandler) and a VMM's own trackers: small types kept in one file, as one contract.

/// A guest-physical range that devices may write by DMA.
///
/// The IOVA a device uses is the guest-physical address: a VMM maps guest RAM 1:1 into the
/// IOMMU, so the trackers and the VMM's RAM handler speak the same addresses.
public struct GuestMemoryRange: Sendable, Hashable, CustomStringConvertible {
    /// The first guest-physical byte.
    public var start: UInt64
    /// The length in bytes.
    public var length: UInt64

    public init(start: UInt64, length: UInt64) { (self.start, self.length) = (start, length) }

    /// One past the last byte, or nil when `start + length` overflows (a malformed range).
    public var end: UInt64? {
        let (end, overflow) = start.addingReportingOverflow(length)
        return overflow ? nil : end
    }

    /// Whether `address` lies in the range.
    public func contains(_ address: UInt64) -> Bool {
        address >= start && address - start < length
    }

    public var description: String {
        "[0x\(String(start, radix: 16)), +0x\(String(length, radix: 16)))"
    }
}

/// How the guest pages written by device DMA are found during a migration.
public enum DirtyTrackingKind: String, Sendable, Hashable, CaseIterable {
    /// Each device logs the pages its DMA writes (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`).
    case deviceDMALogging = "device-dma-logging"
    /// The IOMMU logs the pages written through a container's or HWPT's mappings (type1
    /// `VFIO_IOMMU_DIRTY_PAGES`, or iommufd HWPT dirty tracking).
    case iommu = "iommu"
    /// Nothing tracks: every mapped page counts as dirty at every sync (QEMU's fallback; the
    /// VMM opts in with ``MigrationParameters/allowUntrackedDMA``).
    case allMappedDirty = "all-mapped-dirty"
}

/// The dirty pages of one range, as a bitmap: bit `i` (word `i / 64`, bit `i % 64`, least
/// significant first) is the page at `range.start + i * pageSize`.
///
/// A bitmap can come from a device or a kernel: ``forEachDirtyPage(_:)`` visits only the pages
/// inside ``range``, whatever ``words`` holds beyond them.
public struct DirtyPageBitmap: Sendable, Hashable {
    /// The range the bitmap covers.
    public var range: GuestMemoryRange
    /// The bytes one bit stands for (a power of two).
    public var pageSize: UInt64
    /// The bits, 64 pages a word.
    public var words: [UInt64]

    /// A bitmap with the given bits.
    public init(range: GuestMemoryRange, pageSize: UInt64, words: [UInt64]) {
        (self.range, self.pageSize, self.words) = (range, pageSize, words)
    }

    /// A clean bitmap with one bit per page of `range` (a partial last page counts whole).
    public init(clean range: GuestMemoryRange, pageSize: UInt64) {
        (self.range, self.pageSize) = (range, pageSize)
        let pages = DirtyPageBitmap.pageCount(range.length, pageSize: pageSize)
        words = [UInt64](repeating: 0, count: Int(clamping: pages / 64 + (pages % 64 == 0 ? 0 : 1)))
    }

    /// The number of pages the range holds (a partial last page counts whole); 0 for a zero page size.
    public var pageCount: UInt64 { DirtyPageBitmap.pageCount(range.length, pageSize: pageSize) }

    /// The number of dirty pages inside the range.
    public var dirtyPageCount: Int {
        let pages = pageCount
        var count = 0
        for (index, word) in words.enumerated() where word != 0 {
            let first = UInt64(index) &* 64
            guard first < pages else { break }
            let bits = min(64, pages - first)
            count += (bits == 64 ? word : word & ((1 << bits) - 1)).nonzeroBitCount
        }
        return count
    }

    /// Marks the page holding `guestAddress` dirty; false when the address lies outside the
    /// range or beyond ``words``.
    @discardableResult
    public mutating func markDirty(guestAddress: UInt64) -> Bool {
        guard pageSize > 0, range.contains(guestAddress) else { return false }
        let page = (guestAddress - range.start) / pageSize
        let word = Int(clamping: page / 64)
        guard word < words.count else { return false }
        words[word] |= 1 << (page % 64)
        return true
    }

    /// Calls `body` with the guest-physical address of each dirty page inside the range, in
    /// ascending order. Bits beyond the range's last page are ignored.
    public func forEachDirtyPage(_ body: (_ guestAddress: UInt64) throws -> Void) rethrows {
        let pages = pageCount
        guard pages > 0 else { return }
        for (index, word) in words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                let bit = UInt64(bits.trailingZeroBitCount)
                bits &= bits &- 1
                let page = UInt64(index) &* 64 &+ bit
                guard page < pages else { return }
                // page < pages ≤ ceil(length / pageSize), so page * pageSize < length + pageSize:
                // checked anyway, as the range may come from a device.
                let (offset, overflow) = page.multipliedReportingOverflow(by: pageSize)
                guard !overflow, offset < range.length else { return }
                try body(range.start + offset)
            }
        }
    }

    static func pageCount(_ length: UInt64, pageSize: UInt64) -> UInt64 {
        guard pageSize > 0 else { return 0 }
        return length / pageSize + (length % pageSize == 0 ? 0 : 1)
    }
}

/// Something that reports the guest pages written by DMA since it started or since its
/// previous collect: a device's DMA log, an IOMMU container's or HWPT's dirty tracking.
///
/// The source engine calls these from its migration thread, never two at once for one tracker.
public protocol DirtyPageTracker: AnyObject, Sendable {
    /// The kind of tracking this is.
    var kind: DirtyTrackingKind { get }
    /// A name for people and statistics (e.g. `0000:00:04.0`, `type1 container (fd 7)`).
    var trackerName: String { get }
    /// Starts logging the writes to `ranges`, at `pageSize` granularity (a power of two).
    /// Called once per migration, when the migration starts, before any byte is sent.
    func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws
    /// The pages written since the start or the previous collect (read-and-clear).
    func collectDirtyPages() throws -> [DirtyPageBitmap]
    /// Stops logging. Idempotent, never throws; called when the migration ends, whether it
    /// succeeded, failed or was cancelled.
    func stopTracking()
}

/// A device that may write guest memory by DMA while the guest runs (a passthrough NIC or GPU).
public protocol DMAWritingDevice: AnyObject, Sendable {
    /// The device's name in errors and statistics (e.g. its PCI address).
    var dmaDeviceName: String { get }
    /// Which trackers this device can take part in. A probe only: changes nothing.
    func dirtyTrackingOffer() throws -> DirtyTrackingOffer
}

/// What a ``DMAWritingDevice`` can be tracked with.
public struct DirtyTrackingOffer: Sendable {
    /// The device's own DMA log, if it has one.
    public var deviceLogging: (any DirtyPageTracker)?
    /// Its container's or HWPT's tracker, if the IOMMU tracks dirty pages: the same object for
    /// every device of one container (the engine starts each object once).
    public var iommu: (any DirtyPageTracker)?
    /// Why neither is offered, naming the device and the kernel's answers; nil when one is.
    public var unavailableReason: String?

    public init(
        deviceLogging: (any DirtyPageTracker)? = nil, iommu: (any DirtyPageTracker)? = nil,
        unavailableReason: String? = nil
    ) {
        self.deviceLogging = deviceLogging
        self.iommu = iommu
        self.unavailableReason = unavailableReason
    }
}
