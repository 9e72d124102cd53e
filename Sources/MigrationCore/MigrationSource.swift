import Logging
import MigrationStream
import Synchronization

/// The outgoing side of a migration.
///
/// ```swift
/// let source = MigrationSource(registry: registry, vm: vmm,
///                              configuration: MachineConfiguration(machineType: "pc-q35-7.2"))
/// Task { for await event in source.progress { show(event) } }
/// let stats = try await source.run(to: MigrationAddress(parsing: "tcp:10.0.0.2:4444").transport)
/// ```
///
/// `run` blocks a dedicated migration thread (and a return-path reader thread), never the
/// Swift concurrency pool. Cancel with ``cancel()`` or by cancelling the awaiting task; on
/// any failure or cancel every handler's `saveCleanup(succeeded: false)` runs and a guest the
/// engine stopped is resumed. One instance runs one migration.
public final class MigrationSource: MigrationEngine, EngineInternals {
    /// The VM's run state: stopped at the switchover (vCPUs, then the P2P barrier across every
    /// handler, then every handler, before any END section) and started again when the
    /// migration fails after that.
    public let runState: VMRunState
    /// Written after the file header.
    public let configuration: MachineConfiguration
    public let parameters: MigrationParameters
    /// The devices that write guest memory by DMA and the ranges they may write: tracked from
    /// the start to the end of the migration (DirtyTrackingPlan.swift, docs/engine.md).
    public let dirtyTracking: DirtyTrackingConfiguration
    let parts: EngineParts
    /// The source's view of the switchover acknowledgement, published by the return path.
    let returnPathBox = Mutex<SourceReturnPath?>(nil)

    /// Progress events: at each phase change and at most once per 100 ms window. One consumer;
    /// finishes when `run` returns.
    public var progress: AsyncStream<MigrationProgress> { parts.progress }

    /// A source on the VMM's own ``VMRunState`` (the object it pauses and resumes the guest
    /// through), so a migration and the VMM never change the run state at the same time.
    /// - Parameters:
    ///   - runState: the guest and the handlers whose state moves (its registry).
    ///   - configuration: the machine configuration written after the header.
    ///   - parameters: the migration's parameters.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public convenience init(
        runState: VMRunState, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock(),
        logger: Logger? = nil
    ) {
        self.init(
            runState: runState, configuration: configuration, parameters: parameters, dirtyTracking: .none, clock: clock,
            logger: logger)
    }

    /// A source whose guest has devices that write its memory by DMA: ``dirtyTracking`` says
    /// which, and the guest-physical ranges they may write (docs/engine.md, "Guest memory
    /// written by device DMA").
    /// - Parameters:
    ///   - runState: the guest and the handlers whose state moves (its registry).
    ///   - configuration: the machine configuration written after the header.
    ///   - parameters: the migration's parameters (``MigrationParameters/allowUntrackedDMA``).
    ///   - dirtyTracking: the DMA-writing devices and the guest memory they may write.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public init(
        runState: VMRunState, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), dirtyTracking: DirtyTrackingConfiguration,
        clock: any MigrationClock = MonotonicClock(), logger: Logger? = nil
    ) {
        self.dirtyTracking = dirtyTracking
        self.runState = runState
        self.configuration = configuration
        self.parameters = parameters
        self.parts = EngineParts(clock: clock, logger: logger)
    }

    /// Connects through `transport` and migrates.
    /// - Returns: the statistics of the successful migration.
    /// - Throws: ``MigrationError``.
    public func run(to transport: any MigrationTransport) async throws -> MigrationStatistics {
        try control.begin()
        return try await withTaskCancellationHandler {
            try await runOnDedicatedThread(name: "switchover-source") { [self] in
                let connection: any MigrationConnection
                do {
                    if control.isCancelled { throw TransportError.shutDown }
                    connection = try transport.connect()
                } catch {
                    // saveCleanup runs once per migration, even one that never connected.
                    for e in registry.entries { e.handler.saveCleanup(succeeded: false) }
                    progressContinuation.finish()
                    throw classify(error, phase: .connecting, cancelled: control.isCancelled, message: "could not connect")
                }
                return try SourceRun(owner: self, connection: connection, channels: .transport(transport)).run()
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Migrates over an already connected channel (e.g. one end of
    /// ``DescriptorConnection/socketPair()``). The engine closes it at the end.
    public func run(over connection: any MigrationConnection) async throws -> MigrationStatistics {
        try await run(over: connection, multifdChannels: [])
    }

    /// Migrates over already connected channels: the main one and exactly
    /// ``MigrationParameters/multifdChannels`` multifd channels (channel id = array index).
    /// The engine closes them at the end.
    public func run(over connection: any MigrationConnection, multifdChannels: [any MigrationConnection]) async throws
        -> MigrationStatistics
    {
        try control.begin()
        return try await withTaskCancellationHandler {
            try await runOnDedicatedThread(name: "switchover-source") { [self] in
                try SourceRun(owner: self, connection: connection, channels: .given(multifdChannels)).run()
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Cancels the migration: the connection is shut down, handlers clean up, the guest runs.
    /// Has no effect once the whole stream has been written (the destination may be running
    /// the guest already; the engine then waits for its verdict).
    public func cancel() {
        if !control.cancel() { logger.notice("cancel ignored: the stream is complete, waiting for the destination") }
    }

    /// The switchover acknowledgement as the source knows it now (thread-safe).
    public var acknowledgement: SwitchoverAcknowledgement {
        guard let rp = returnPathBox.withLock({ $0 }) else { return SwitchoverAcknowledgement(acknowledged: false, handlers: [:]) }
        var states: [HandlerIdentity: AckState] = [:]
        for e in registry.entries { states[e.identity] = rp.ackState(of: e.identity.key, ackEnabled: parameters.switchoverAck) }
        return SwitchoverAcknowledgement(acknowledged: rp.acknowledged, handlers: states)
    }
}
