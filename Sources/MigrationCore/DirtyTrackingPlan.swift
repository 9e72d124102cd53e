import Synchronization

/// The tracking chosen for one migration, as QEMU chooses it: device DMA logging when every
/// DMA-writing device offers it; else IOMMU dirty tracking when every device's container (or
/// HWPT) offers it; else, only when the VMM opted in (``MigrationParameters/allowUntrackedDMA``),
/// all mapped memory counts as dirty at every sync. Otherwise the migration is refused.
public struct DirtyTrackingPlan: Sendable {
    /// The kind chosen.
    public var kind: DirtyTrackingKind
    /// The trackers to start: one per device for device logging, one per container or HWPT
    /// (however many devices share it) for IOMMU tracking, one for all-mapped-dirty.
    public var trackers: [any DirtyPageTracker]
    /// Why a better kind was not chosen: each device that lacks it, in words (empty for device
    /// logging).
    public var reasons: [String]

    /// Chooses the tracking for `devices`. Asks each device for its offer (a probe that changes
    /// nothing) once.
    /// - Returns: nil when `devices` is empty (nothing to track).
    /// - Throws: a ``MigrationError`` with ``MigrationError/Code/dirtyTrackingUnavailable``
    ///   naming each device that can be tracked by neither, unless `allowUntrackedDMA`.
    public static func choose(
        for devices: [any DMAWritingDevice], ranges: [GuestMemoryRange], allowUntrackedDMA: Bool
    ) throws(MigrationError) -> DirtyTrackingPlan? {
        guard !devices.isEmpty else { return nil }
        var offers: [(name: String, offer: DirtyTrackingOffer)] = []
        for device in devices {
            do {
                offers.append((device.dmaDeviceName, try device.dirtyTrackingOffer()))
            } catch {
                let reason = "\(device.dmaDeviceName): probing its dirty tracking failed: \(error)"
                offers.append((device.dmaDeviceName, DirtyTrackingOffer(unavailableReason: reason)))
            }
        }
        func why(_ name: String, _ offer: DirtyTrackingOffer, lacking: String) -> String {
            offer.unavailableReason ?? "\(name) offers no \(lacking)"
        }
        let logs = offers.compactMap(\.offer.deviceLogging)
        if logs.count == offers.count {
            return DirtyTrackingPlan(kind: .deviceDMALogging, trackers: logs, reasons: [])
        }
        let noLogging = offers.filter { $0.offer.deviceLogging == nil }.map { why($0.name, $0.offer, lacking: "device DMA logging") }
        if offers.allSatisfy({ $0.offer.iommu != nil }) {
            // One tracker per container: devices of one container offer the same object.
            var seen = Set<ObjectIdentifier>()
            let trackers = offers.compactMap(\.offer.iommu).filter { seen.insert(ObjectIdentifier($0)).inserted }
            return DirtyTrackingPlan(kind: .iommu, trackers: trackers, reasons: noLogging)
        }
        let neither = offers.filter { $0.offer.deviceLogging == nil && $0.offer.iommu == nil }
            .map { why($0.name, $0.offer, lacking: "dirty tracking") }
        // Devices with one kind each but not the same kind for all: QEMU refuses this mix too.
        let reasons = neither.isEmpty ? noLogging : neither
        guard allowUntrackedDMA else {
            throw MigrationError(
                .dirtyTrackingUnavailable, phase: .idle,
                message: "the guest pages written by device DMA cannot be tracked: " + reasons.joined(separator: "; ")
                    + " (allowUntrackedDMA treats all DMA-mapped memory as dirty instead)")
        }
        return DirtyTrackingPlan(kind: .allMappedDirty, trackers: [AllMappedDirtyTracker()], reasons: reasons)
    }
}

/// No tracking: every page of every range counts as dirty at every collect (QEMU's fallback
/// when a device can be tracked by nothing). Correct, and the RAM never converges below the
/// mapped size while it is used.
final class AllMappedDirtyTracker: DirtyPageTracker {
    private let state = Mutex<(ranges: [GuestMemoryRange], pageSize: UInt64, started: Bool)>(([], 4096, false))

    var kind: DirtyTrackingKind { .allMappedDirty }
    var trackerName: String { "all mapped memory" }

    func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws {
        state.withLock { $0 = (ranges, pageSize, true) }
    }

    func collectDirtyPages() throws -> [DirtyPageBitmap] {
        let (ranges, pageSize, started) = state.withLock { ($0.ranges, $0.pageSize, $0.started) }
        guard started else { return [] }
        return ranges.map { range in
            var bitmap = DirtyPageBitmap(clean: range, pageSize: pageSize)
            let pages = bitmap.pageCount
            for index in bitmap.words.indices {
                let first = UInt64(index) * 64
                let bits = min(64, pages - first)
                bitmap.words[index] = bits == 64 ? ~0 : (1 << bits) - 1
            }
            return bitmap
        }
    }

    func stopTracking() {
        state.withLock { $0.started = false }
    }
}
