/// What the VMM tells a ``MigrationSource`` about the devices that write guest memory by DMA
/// and the guest memory they may write (``MigrationSource/dirtyTracking``).
///
/// With devices listed, the source chooses a tracking (``DirtyTrackingPlan``) before any byte
/// is sent, starts it when the migration starts, stops it when it ends, and hands the pages
/// to the handlers through ``SaveContext/dirtyMemory``. With none, nothing is tracked.
public struct DirtyTrackingConfiguration: Sendable {
    /// Every device that may write guest memory by DMA while the guest runs.
    public var devices: [any DMAWritingDevice]
    /// The guest-physical ranges mapped for DMA (the VMM's guest RAM, as it mapped it into the
    /// IOMMU): non-empty, page-aligned, not overlapping.
    public var ranges: [GuestMemoryRange]
    /// The tracking granularity in bytes: a power of two, at least 4096 (the guest page size).
    public var pageSize: UInt64

    public init(devices: [any DMAWritingDevice], ranges: [GuestMemoryRange], pageSize: UInt64 = 4096) {
        (self.devices, self.ranges, self.pageSize) = (devices, ranges, pageSize)
    }

    /// No device writes guest memory by DMA: nothing is tracked.
    public static var none: DirtyTrackingConfiguration { DirtyTrackingConfiguration(devices: [], ranges: []) }

    /// Why the configuration cannot be used, or nil. Nothing here comes from a peer, but the
    /// ranges come from the VMM: checked without overflow.
    func problem() -> String? {
        guard !devices.isEmpty else { return nil }
        guard pageSize >= 4096, pageSize & (pageSize - 1) == 0, pageSize <= 1 << 30 else {
            return "the dirty-tracking page size must be a power of two from 4 KiB to 1 GiB, not \(pageSize)"
        }
        guard !ranges.isEmpty else { return "DMA-writing devices are registered, but no guest memory range" }
        var names = Set<String>()
        for device in devices where !names.insert(device.dmaDeviceName).inserted {
            return "the DMA-writing device \(device.dmaDeviceName) is registered twice"
        }
        let sorted = ranges.sorted { $0.start < $1.start }
        var previousEnd: UInt64 = 0
        for (index, range) in sorted.enumerated() {
            guard range.length > 0, let end = range.end else { return "the guest memory range \(range) is empty or overflows" }
            guard range.start % pageSize == 0, range.length % pageSize == 0 else {
                return "the guest memory range \(range) is not aligned to the \(pageSize)-byte tracking page"
            }
            if index > 0, range.start < previousEnd { return "the guest memory range \(range) overlaps another" }
            previousEnd = end
        }
        return nil
    }
}
