import Synchronization

/// The guest pages devices wrote by DMA during a migration, as the VMM's RAM handler reads
/// them (``SaveContext/dirtyMemory``).
///
/// The RAM handler calls ``sync()`` at every pass (in `saveIterate`, and in `pendingExact`
/// when it recounts its dirty pages) and merges the pages into its own dirty bitmap; and once
/// more in `saveComplete`, which runs after every device has stopped: that final sync
/// collects the pages written just before the devices stopped. The source engine fails a
/// migration whose handlers never made the final sync, before the end of the stream.
public final class DirtyMemoryLog: Sendable {
    /// The tracking in use.
    public let kind: DirtyTrackingKind
    /// The guest-physical ranges tracked (``DirtyTrackingConfiguration/ranges``).
    public let ranges: [GuestMemoryRange]
    /// The bytes one bit of a bitmap stands for.
    public let pageSize: UInt64
    /// The trackers' names, in the order they are read.
    public let trackerNames: [String]

    private let trackers: [any DirtyPageTracker]
    private let reasons: [String]
    private let state = Mutex(State())

    private struct State {
        var devicesStopped = false
        var stopped = false
        var pagesPerSync: [Int] = []
        var finalSyncPages: Int?
    }

    init(plan: DirtyTrackingPlan, ranges: [GuestMemoryRange], pageSize: UInt64) {
        kind = plan.kind
        self.ranges = ranges
        self.pageSize = pageSize
        trackers = plan.trackers
        trackerNames = plan.trackers.map(\.trackerName)
        reasons = plan.reasons
    }

    /// Reads and clears every tracker: the pages written since the previous sync (or since the
    /// migration started), one bitmap per tracker and range. Pages may repeat across bitmaps.
    /// Bitmaps come from devices and kernels: visit them with
    /// ``DirtyPageBitmap/forEachDirtyPage(_:)`` and check each address against your memory.
    /// Call on the migration thread (from a handler's source hooks).
    /// - Throws: the tracker's error; the engine then fails the migration.
    public func sync() throws -> [DirtyPageBitmap] {
        let stopped = state.withLock { $0.stopped }
        guard !stopped else { return [] }
        var bitmaps: [DirtyPageBitmap] = []
        for tracker in trackers {
            do {
                bitmaps += try tracker.collectDirtyPages()
            } catch {
                throw DirtyTrackingError.collectFailed(tracker: tracker.trackerName, cause: error)
            }
        }
        let pages = bitmaps.reduce(0) { $0 &+ $1.dirtyPageCount }
        state.withLock {
            if $0.devicesStopped {
                $0.finalSyncPages = ($0.finalSyncPages ?? 0) &+ pages
            } else {
                $0.pagesPerSync.append(pages)
            }
        }
        return bitmaps
    }

    /// Whether a sync happened after the devices stopped.
    var madeFinalSync: Bool { state.withLock { $0.finalSyncPages != nil } }

    /// Every device has stopped: the next syncs are the final one.
    func devicesStopped() { state.withLock { $0.devicesStopped = true } }

    /// Starts every tracker; on a failure stops those started and throws.
    func start() throws(MigrationError) {
        for (index, tracker) in trackers.enumerated() {
            do {
                try tracker.startTracking(ranges: ranges, pageSize: pageSize)
            } catch {
                for started in trackers[..<index] { started.stopTracking() }
                state.withLock { $0.stopped = true }
                throw MigrationError(
                    .dirtyTrackingUnavailable, phase: .idle,
                    message: "starting \(kind.rawValue) dirty tracking on \(tracker.trackerName) failed", cause: error)
            }
        }
    }

    /// Stops every tracker (idempotent).
    func stop() {
        let first = state.withLock {
            let first = !$0.stopped
            $0.stopped = true
            return first
        }
        if first { for tracker in trackers { tracker.stopTracking() } }
    }

    var statistics: DirtyTrackingStatistics {
        state.withLock {
            DirtyTrackingStatistics(
                kind: kind, trackers: trackerNames, pagesPerSync: $0.pagesPerSync, finalSyncPages: $0.finalSyncPages,
                reasons: reasons)
        }
    }
}

/// A migration's dirty tracking on the source, from the choice to the stop.
final class DirtyTrackingSession: Sendable {
    let configuration: DirtyTrackingConfiguration
    private let current = Mutex<DirtyMemoryLog?>(nil)

    init(_ configuration: DirtyTrackingConfiguration) {
        self.configuration = configuration
    }

    /// The log once tracking has started.
    var log: DirtyMemoryLog? { current.withLock { $0 } }

    /// Checks the configuration, chooses the tracking and starts it. Before any byte is sent.
    func start(parameters: MigrationParameters) throws(MigrationError) {
        if let problem = configuration.problem() { throw MigrationError.invalidParameters(problem) }
        guard
            let plan = try DirtyTrackingPlan.choose(
                for: configuration.devices, ranges: configuration.ranges, allowUntrackedDMA: parameters.allowUntrackedDMA)
        else { return }
        let log = DirtyMemoryLog(plan: plan, ranges: configuration.ranges, pageSize: configuration.pageSize)
        try log.start()
        current.withLock { $0 = log }
    }

    /// Stops tracking: on success, failure and cancel alike. Idempotent.
    func stop() { log?.stop() }
}

extension DirtyTrackingSession {
    /// Before EOF: with tracking on, some handler must have read the pages written before the
    /// devices stopped, or the destination would run on RAM that misses them.
    func checkFinalSync(phase: MigrationPhase) throws(MigrationError) {
        guard let log, !log.madeFinalSync else { return }
        throw MigrationError(
            .dirtyTrackingUnavailable, phase: phase,
            message: "no handler read the dirty pages after the devices stopped (the final sync of "
                + "SaveContext.dirtyMemory in saveComplete): the destination's RAM would miss pages written by DMA")
    }
}
