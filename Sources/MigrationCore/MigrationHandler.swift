import MigrationStream

/// A participant in a migration: QEMU's `SaveVMHandlers`, in Swift.
///
/// A handler is registered under a ``HandlerIdentity`` (idstr, instance id, version id) on
/// both sides. On the source its hooks write section bodies; on the destination
/// ``loadState(from:header:context:)`` reads exactly what the source wrote.
///
/// Section kinds: a *live* handler (``isLive``) gets a START section from ``saveSetup(to:context:)``,
/// PART sections from ``saveIterate(to:context:)`` and an END section from
/// ``saveComplete(to:context:)``; a handler with ``hasFullState`` also gets a FULL section
/// from ``saveState(to:context:)`` after every END section (VFIO sends its config space there).
///
/// Threads: unless a hook says otherwise, source hooks run on the source's migration thread and
/// destination hooks on the destination's load thread, one hook at a time per side. Only the
/// multifd hooks run on other threads, concurrently with the main-thread hooks of other
/// handlers (never with this handler's own ``saveComplete(to:context:)``/``loadState(from:header:context:)``
/// unless documented). Hooks block; they must not call back into the engine except through
/// their context.
public protocol MigrationHandler: AnyObject, Sendable {
    // MARK: Source side

    /// Whether the handler takes part in this migration at all (QEMU `is_active`). Inactive
    /// handlers get no sections and no pending queries. Default: true.
    var isActive: Bool { get }

    /// Whether the handler sends START/PART/END sections. Default: false.
    var isLive: Bool { get }

    /// Whether the handler sends a FULL section at completion. Default: true for non-live
    /// handlers, false for live ones.
    var hasFullState: Bool { get }

    /// What the device behind the handler is, for the pre-flight check (e.g. vendor and
    /// device ids, firmware and driver versions), or nil when the handler has nothing to
    /// compare. Asked once per migration on both sides, on the migration thread, before any
    /// section; when both sides give a string they must be equal. Default: nil.
    var preflightIdentity: String? { get }

    /// Early veto before any byte is sent (QEMU `save_prepare`). Default: nothing.
    func savePrepare(context: SaveContext) throws

    /// Writes the body of the START section (QEMU `save_setup`). Live handlers only.
    /// Runs once, on the migration thread, before any PART section.
    func saveSetup(to writer: StreamWriter, context: SaveContext) throws

    /// Whether this pass should give the handler a PART section (QEMU `is_active_iterate`).
    /// Default: true.
    func isActiveIterate(context: SaveContext) -> Bool

    /// Writes the body of one PART section (QEMU `save_live_iterate`). Send one bounded chunk,
    /// not everything: the engine rate-limits between sections. Runs on the migration thread.
    func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult

    /// Writes the body of the END section with the VM stopped (QEMU `save_complete`): all the
    /// remaining data. Runs on the migration thread; its duration counts in the downtime.
    func saveComplete(to writer: StreamWriter, context: SaveContext) throws

    /// Writes the body of the FULL section (QEMU `save_state`/vmstate). Runs on the migration
    /// thread with the VM stopped, after every END section.
    func saveState(to writer: StreamWriter, context: SaveContext) throws

    /// A cheap estimate of what remains (QEMU `state_pending_estimate`); called every
    /// iteration, on the migration thread. Default: zero.
    func pendingEstimate(context: SaveContext) -> PendingBytes

    /// The exact figure (QEMU `state_pending_exact`), which may be expensive; called only when
    /// the estimate is under the switchover threshold. Default: the estimate.
    func pendingExact(context: SaveContext) throws -> PendingBytes

    /// Releases source-side resources. Always called once at the end, whether the migration
    /// succeeded, failed or was cancelled, even if ``saveSetup(to:context:)`` never ran.
    /// `succeeded` is false on failure or cancel: a device handler must then put its device
    /// back to running.
    func saveCleanup(succeeded: Bool)

    // MARK: Run state (both sides)

    /// The guest is about to change run state (QEMU's change-state *prepare* callback): every
    /// handler hears this before any hears ``runStateChanged(_:)``. On a stop it comes once the
    /// vCPUs have stopped; on a start, before they start. A device quiesces here what would
    /// disturb the others while they change (VFIO: RUNNING_P2P or PRE_COPY_P2P, no new
    /// peer-to-peer DMA). Called by ``VMRunState`` on the thread that changes the run state
    /// (the migration or load thread during a migration, the VMM's otherwise), never
    /// concurrently with this handler's section hooks. A thrown error stops a stop (the engine
    /// then fails the migration and starts the guest again); on a start it is reported and
    /// this handler gets no ``runStateChanged(_:)``. Default: nothing.
    func prepareRunStateChange(_ change: VMRunStateChange) throws

    /// The guest's run state changed (QEMU's change-state handler): every handler has
    /// prepared. A device follows the vCPUs here (VFIO: STOP_COPY at the switchover, STOP on
    /// another stop, RUNNING on a start). On the source this comes before any END section, so
    /// ``saveComplete(to:context:)`` only reads what is left. A device that fails to run again
    /// must be reset, and the error must say so. Same thread rules as
    /// ``prepareRunStateChange(_:)``. Default: nothing.
    func runStateChanged(_ change: VMRunStateChange) throws

    // MARK: Destination side

    /// Prepares to receive (QEMU `load_setup`), after the header and before any section.
    func loadSetup(context: LoadContext) throws

    /// Whether this handler will acknowledge the switchover once its initial data is loaded
    /// (QEMU `switchover_ack_needed`). Asked once, after ``loadSetup(context:)``, only when
    /// switchover-ack is on. Default: false.
    func switchoverAckNeeded(context: LoadContext) -> Bool

    /// Reads one section body, consuming exactly what the source wrote (QEMU `load_state`).
    /// `header.binding.versionID` is the source's version, never newer than ours.
    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws

    /// Called when the source's SWITCHOVER_START command arrives (QEMU `switchover_start`).
    /// Default: nothing.
    func switchoverStart(context: LoadContext) throws

    /// Finishes loading after EOF, before the destination VM resumes: a device commits what it
    /// received (VFIO: RESUMING → STOP → RUNNING). A thrown error fails the migration, and the
    /// source keeps its VM. Runs on the load thread. Default: nothing.
    func loadComplete(context: LoadContext) throws

    /// Releases destination resources; always called once at the end. `succeeded` is false
    /// when the incoming migration failed: a device handler must reset what it loaded.
    func loadCleanup(succeeded: Bool)

    /// The handler's estimate of the fixed time, in microseconds, the destination will still
    /// spend loading its final data besides streaming it (reported to the source for the
    /// downtime prediction). Default: 0.
    func expectedFinalLoadCostMicros(context: LoadContext) -> UInt64

    /// What the handler has received and not yet loaded, and the time it expects loading it to
    /// take from now (e.g. an mlx5 image whose record is still arriving: the device loads it
    /// when it is whole). The destination reports it to the source (LOAD_BACKLOG) while it
    /// works, so the source does not stop the guest while the destination is still busy.
    /// Called on the destination's backlog-report thread, possibly while ``loadState(from:header:context:)``
    /// runs on the load thread: it must be thread-safe and must not block. Default: ``LoadBacklog/none``.
    func loadBacklog(context: LoadContext) -> LoadBacklog

    // MARK: Multifd (device state over parallel channels)

    /// What the handler can send over the multifd channels: its stop-copy data
    /// (``MultifdSupport/stopCopy``), and also its pre-copy data
    /// (``MultifdSupport/precopy``). The handler's one opt-in: the engine reads it when the
    /// migration starts and calls the multifd hooks below only for what it names. A value, not
    /// a protocol conformance, so a wrapper forwards it and a handler can answer per device.
    /// Default: none.
    var multifdSupport: MultifdSupport { get }

    /// Sends the stop-copy data as device-state packets (QEMU `save_complete_precopy_thread`).
    /// Runs on a thread of its own, concurrently with the END pass of the main channel — and,
    /// as in QEMU, with this handler's own ``saveComplete(to:context:)``, which then sees
    /// `context.multifdTransfer` and must write only its dummy body without touching the device.
    /// The last buffer sent must have `isConfigState` (the engine refuses a return without one).
    /// Called only when the handler's multifd transfer resolves to on (docs/multifd.md).
    func saveCompleteMultifd(to sender: DeviceStateSender, context: SaveContext) throws

    /// Consumes one device-state buffer, in index order (QEMU `load_state_buffer` as fed by
    /// VFIO's load thread). Runs on this handler's own load thread, started at SWITCHOVER_START,
    /// concurrently with the main channel's sections (this handler's END and FULL bodies are
    /// then dummies). `isConfigState` marks the last buffer. Every call returns before
    /// ``loadComplete(context:)`` or ``loadCleanup(succeeded:)``.
    func loadStateBuffer(_ buffer: UnsafeRawBufferPointer, index: UInt32, isConfigState: Bool, context: LoadContext) throws

    /// Pre-copy over the channels (``MigrationParameters/multifdPrecopy``, Switchover peers
    /// only, beyond QEMU 10.0), for a handler whose ``multifdSupport`` contains
    /// ``MultifdSupport/precopy``: the engine then gives it no PART sections and calls this on
    /// a thread of its own during the live phase instead. Sends pre-copy data as device-state
    /// buffers: about `budget` bytes at most (one bounded buffer is the usual answer). Its
    /// buffers take the first indices; the stop-copy buffers continue the same sequence, so the
    /// destination's load thread (started at load setup in this mode) feeds them all in order.
    /// Runs concurrently with the main thread's `pendingEstimate`/`pendingExact` of this handler
    /// (and hooks of the others), never with its own ``saveCompleteMultifd(to:context:)``.
    /// `.done`: nothing to send right now.
    func saveIterateMultifd(to sender: DeviceStateSender, budget: Int, context: SaveContext) throws -> IterationResult
}

extension MigrationHandler {
    public var isActive: Bool { true }
    public var isLive: Bool { false }
    public var hasFullState: Bool { !isLive }
    public var preflightIdentity: String? { nil }
    public func savePrepare(context: SaveContext) throws {}
    public func saveSetup(to writer: StreamWriter, context: SaveContext) throws {}
    public func isActiveIterate(context: SaveContext) -> Bool { true }
    public func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult { .done }
    public func saveComplete(to writer: StreamWriter, context: SaveContext) throws {}
    public func saveState(to writer: StreamWriter, context: SaveContext) throws {}
    public func pendingEstimate(context: SaveContext) -> PendingBytes { .zero }
    public func pendingExact(context: SaveContext) throws -> PendingBytes { pendingEstimate(context: context) }
    public func saveCleanup(succeeded: Bool) {}
    public func prepareRunStateChange(_ change: VMRunStateChange) throws {}
    public func runStateChanged(_ change: VMRunStateChange) throws {}
    public func loadSetup(context: LoadContext) throws {}
    public func switchoverAckNeeded(context: LoadContext) -> Bool { false }
    public func switchoverStart(context: LoadContext) throws {}
    public func loadComplete(context: LoadContext) throws {}
    public func loadCleanup(succeeded: Bool) {}
    public func expectedFinalLoadCostMicros(context: LoadContext) -> UInt64 { 0 }
    public func loadBacklog(context: LoadContext) -> LoadBacklog { .none }
    public var multifdSupport: MultifdSupport { [] }
    public func saveCompleteMultifd(to sender: DeviceStateSender, context: SaveContext) throws {
        throw MigrationHandlerError.unsupported(identity: context.identity, hook: "saveCompleteMultifd")
    }
    public func loadStateBuffer(_ buffer: UnsafeRawBufferPointer, index: UInt32, isConfigState: Bool, context: LoadContext) throws {
        throw MigrationHandlerError.unsupported(identity: context.identity, hook: "loadStateBuffer")
    }
    public func saveIterateMultifd(to sender: DeviceStateSender, budget: Int, context: SaveContext) throws -> IterationResult {
        throw MigrationHandlerError.unsupported(identity: context.identity, hook: "saveIterateMultifd")
    }
}
