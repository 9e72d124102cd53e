// A MigrationHandler that forwards every hook to the VFIO-PCI handler and records the device's
// migration state after each one, so the migration checks see the arcs the real device took as
// MigrationCore's engine drives the hooks.

#if os(Linux)
import MigrationCore
import MigrationStream
import Synchronization
import VFIO
import VFIOPCIHandler

final class ObservingHandler: MigrationHandler {
    let inner: VFIOPCIHandler
    /// (hook, the device state after it, or the error reading it).
    private let log = Mutex<[(hook: String, state: String)]>([])

    init(_ inner: VFIOPCIHandler) { self.inner = inner }

    /// Every hook called so far, with the state the device was in after it.
    var observations: [(hook: String, state: String)] { log.withLock { $0 } }

    /// Every hook so far with the state after it, for a check's note: `hooks: saveSetup→PRE_COPY …`.
    var hookTrace: String { "hooks: " + observations.map { "\($0.hook)→\($0.state)" }.joined(separator: " ") }

    /// The state after the first call of `hook`.
    func state(after hook: String) -> String? { observations.first { $0.hook == hook }?.state }

    private func observe<T>(_ hook: String, _ body: () throws -> T) rethrows -> T {
        defer {
            let state: String
            do { state = try inner.device.deviceState().description } catch { state = "unknown (\(error))" }
            log.withLock { $0.append((hook, state)) }
        }
        return try body()
    }

    var isActive: Bool { inner.isActive }
    var isLive: Bool { inner.isLive }
    var hasFullState: Bool { inner.hasFullState }
    var multifdSupport: MultifdSupport { inner.multifdSupport }
    var preflightIdentity: String? { inner.preflightIdentity }

    func savePrepare(context: SaveContext) throws { try observe("savePrepare") { try inner.savePrepare(context: context) } }
    func saveSetup(to writer: StreamWriter, context: SaveContext) throws {
        try observe("saveSetup") { try inner.saveSetup(to: writer, context: context) }
    }
    func isActiveIterate(context: SaveContext) -> Bool { inner.isActiveIterate(context: context) }
    func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult {
        try observe("saveIterate") { try inner.saveIterate(to: writer, context: context) }
    }
    func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        try observe("saveComplete") { try inner.saveComplete(to: writer, context: context) }
    }
    func saveState(to writer: StreamWriter, context: SaveContext) throws {
        try observe("saveState") { try inner.saveState(to: writer, context: context) }
    }
    func pendingEstimate(context: SaveContext) -> PendingBytes { inner.pendingEstimate(context: context) }
    func pendingExact(context: SaveContext) throws -> PendingBytes { try inner.pendingExact(context: context) }
    func saveCleanup(succeeded: Bool) { observe("saveCleanup") { inner.saveCleanup(succeeded: succeeded) } }

    func loadSetup(context: LoadContext) throws { try observe("loadSetup") { try inner.loadSetup(context: context) } }
    func switchoverAckNeeded(context: LoadContext) -> Bool { inner.switchoverAckNeeded(context: context) }
    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        try observe("loadState(\(header.kind))") { try inner.loadState(from: reader, header: header, context: context) }
    }
    func switchoverStart(context: LoadContext) throws { try observe("switchoverStart") { try inner.switchoverStart(context: context) } }
    func loadComplete(context: LoadContext) throws { try observe("loadComplete") { try inner.loadComplete(context: context) } }
    func loadCleanup(succeeded: Bool) { observe("loadCleanup") { inner.loadCleanup(succeeded: succeeded) } }
    func expectedFinalLoadCostMicros(context: LoadContext) -> UInt64 { inner.expectedFinalLoadCostMicros(context: context) }
    func loadBacklog(context: LoadContext) -> LoadBacklog { inner.loadBacklog(context: context) }

    func prepareRunStateChange(_ change: VMRunStateChange) throws {
        try observe("prepareRunStateChange(\(change.running ? "start" : "stop"))") { try inner.prepareRunStateChange(change) }
    }
    func runStateChanged(_ change: VMRunStateChange) throws {
        try observe("runStateChanged(\(change.running ? "start" : "stop"))") { try inner.runStateChanged(change) }
    }

    func saveCompleteMultifd(to sender: DeviceStateSender, context: SaveContext) throws {
        try inner.saveCompleteMultifd(to: sender, context: context)
    }
    func loadStateBuffer(_ buffer: UnsafeRawBufferPointer, index: UInt32, isConfigState: Bool, context: LoadContext) throws {
        try inner.loadStateBuffer(buffer, index: index, isConfigState: isConfigState, context: context)
    }
    func saveIterateMultifd(to sender: DeviceStateSender, budget: Int, context: SaveContext) throws -> IterationResult {
        try inner.saveIterateMultifd(to: sender, budget: budget, context: context)
    }
}

extension VFIOCheck {
    /// The arcs the device took: for each of `arcs`, the state after the first call of its
    /// hook is the one it names (`step` says which step that hook is, for the check's message).
    mutating func expectStates(of handler: ObservingHandler, _ arcs: [(hook: String, state: String, step: String)]) {
        for arc in arcs { expectEqual(handler.state(after: arc.hook), arc.state, "state after \(arc.step)") }
    }
}
#endif
