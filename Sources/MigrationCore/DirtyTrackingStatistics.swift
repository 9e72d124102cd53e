/// How guest pages written by device DMA were tracked in a migration
/// (``MigrationStatistics/dirtyTracking``).
public struct DirtyTrackingStatistics: Sendable, Hashable {
    /// The tracking used.
    public var kind: DirtyTrackingKind
    /// The trackers' names (devices for device logging, containers for IOMMU tracking).
    public var trackers: [String]
    /// The pages reported by tracking at each sync while the devices ran.
    public var pagesPerSync: [Int]
    /// The pages reported after the devices stopped (the final sync); nil when none was made.
    public var finalSyncPages: Int?
    /// Why a better kind was not used (see ``DirtyTrackingPlan/reasons``).
    public var reasons: [String]

    /// How many trackers ran.
    public var trackerCount: Int { trackers.count }
}
