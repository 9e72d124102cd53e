import Logging
import MigrationStream

/// The incoming side of a migration.
///
/// ```swift
/// let destination = MigrationDestination(registry: registry, vm: vmm,
///                                        configuration: MachineConfiguration(machineType: "pc-q35-7.2"))
/// let stats = try await destination.run(from: MigrationAddress(parsing: "tcp:[::]:4444").transport)
/// ```
///
/// It checks the header and configuration, runs every handler's `loadSetup`, dispatches each
/// section to the handler registered under its (idstr, instance id), checks every footer,
/// answers the return-path commands, resumes the guest after EOF and reports the result to
/// the source (SHUT). On failure or cancel every handler's `loadCleanup(succeeded: false)`
/// runs. The load loop runs on a dedicated thread. One instance runs one migration.
public final class MigrationDestination: MigrationEngine, EngineInternals {
    /// The VM's run state: started after a successful stream (every device RUNNING_P2P, then
    /// every device RUNNING, then the vCPUs), or — with ``MigrationParameters/resumeOnCompletion``
    /// off — left stopped, devices in STOP, until the VMM calls ``VMRunState/start(_:)``.
    public let runState: VMRunState
    /// The local machine configuration the stream's must match.
    public let configuration: MachineConfiguration
    public let parameters: MigrationParameters
    let parts: EngineParts

    /// Progress events: at each phase change and at most every 100 ms while loading.
    public var progress: AsyncStream<MigrationProgress> { parts.progress }

    /// A destination on the VMM's own ``VMRunState``: the VMM later starts the guest through
    /// the same object when ``MigrationParameters/resumeOnCompletion`` is off.
    /// - Parameters:
    ///   - runState: the guest and the handlers to load sections into (its registry).
    ///   - configuration: this destination's machine; the stream's machine type must equal it.
    ///   - parameters: the migration's parameters; those both ends share must match the source's.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public init(
        runState: VMRunState, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock(),
        logger: Logger? = nil
    ) {
        self.runState = runState
        self.configuration = configuration
        self.parameters = parameters
        self.parts = EngineParts(clock: clock, logger: logger)
    }

    /// Listens on `transport`, accepts one migration and loads it.
    public func run(from transport: any MigrationTransport) async throws -> IncomingStatistics {
        let listener: any MigrationListener
        do {
            listener = try transport.listen()
        } catch {
            throw MigrationError(.transport, phase: .connecting, message: "could not listen", cause: error)
        }
        return try await run(accepting: listener)
    }

    /// Accepts one migration from `listener` (e.g. a ``TCPListener`` on port 0) and loads it.
    public func run(accepting listener: any MigrationListener) async throws -> IncomingStatistics {
        try control.begin()
        control.attach(listener)
        return try await withTaskCancellationHandler {
            try await runOnDedicatedThread(name: "switchover-destination") { [self] in
                let connection: any MigrationConnection
                var channels: [AcceptedChannel] = []
                do {
                    defer { listener.close() }
                    if control.isCancelled { throw TransportError.shutDown }
                    try MultifdPlan.validate(parameters)
                    if parameters.multifdChannels > 0 {
                        // Main + N connections in any order, told apart by their first bytes.
                        (connection, channels) = try MultifdChannels.accept(
                            from: listener, count: parameters.multifdChannels,
                            timeout: parameters.stallTimeout, readTimeout: parameters.stallTimeout)
                    } else {
                        connection = try listener.accept()
                    }
                } catch {
                    for e in registry.entries { e.handler.loadCleanup(succeeded: false) }
                    progressContinuation.finish()
                    if error is MigrationError { throw error }
                    throw classify(
                        error, phase: .connecting, cancelled: control.isCancelled,
                        message: parameters.multifdChannels > 0 ? "the incoming connections could not be set up" : "no incoming connection")
                }
                return try DestinationRun(owner: self, connection: connection, channels: channels).run()
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Loads a migration from an already connected channel. The engine closes it at the end.
    public func run(over connection: any MigrationConnection) async throws -> IncomingStatistics {
        try await run(over: connection, multifdChannels: [])
    }

    /// Loads a migration from already connected channels: the main one and exactly
    /// ``MigrationParameters/multifdChannels`` multifd channels, in any order (each is
    /// classified by its first bytes, as accepted ones are). The engine closes them at the end.
    public func run(over connection: any MigrationConnection, multifdChannels: [any MigrationConnection]) async throws -> IncomingStatistics
    {
        try control.begin()
        return try await withTaskCancellationHandler {
            try await runOnDedicatedThread(name: "switchover-destination") { [self] in
                var main: any MigrationConnection = connection
                var channels: [AcceptedChannel] = []
                if !multifdChannels.isEmpty || parameters.multifdChannels > 0 {
                    do {
                        try MultifdPlan.validate(parameters)
                        (main, channels) = try MultifdChannels.classify(
                            [connection] + multifdChannels, count: parameters.multifdChannels,
                            readTimeout: parameters.stallTimeout)
                    } catch {
                        abandon([connection] + multifdChannels)
                        for e in registry.entries { e.handler.loadCleanup(succeeded: false) }
                        progressContinuation.finish()
                        if error is MigrationError { throw error }
                        throw classify(
                            error, phase: .connecting, cancelled: control.isCancelled,
                            message: "the incoming connections could not be set up")
                    }
                }
                return try DestinationRun(owner: self, connection: main, channels: channels).run()
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Cancels the incoming migration: handlers reset what they loaded, the source is told.
    public func cancel() { control.cancel() }
}
