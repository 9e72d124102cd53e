import Logging
import MigrationStream

/// What ``MigrationSource`` and ``MigrationDestination`` have in common: the guest's run state
/// (its handlers and vCPUs), the machine configuration, the parameters and the progress events.
public protocol MigrationEngine: AnyObject, Sendable {
    /// The VM's run state: its registry holds the handlers, its vCPUs are the guest's.
    var runState: VMRunState { get }
    /// The machine configuration (the source writes it after the header; the destination's
    /// must match the stream's).
    var configuration: MachineConfiguration { get }
    /// The migration's parameters.
    var parameters: MigrationParameters { get }
    /// Progress events: at each phase change and at most once per 100 ms window. One consumer;
    /// finishes when the run returns.
    var progress: AsyncStream<MigrationProgress> { get }

    /// Cancels the migration: the connection is shut down, handlers clean up.
    func cancel()

    /// An engine on the VMM's own ``VMRunState``.
    init(
        runState: VMRunState, configuration: MachineConfiguration, parameters: MigrationParameters, clock: any MigrationClock,
        logger: Logger?)
}

extension MigrationEngine {
    /// An engine on a ``VMRunState`` of its own over `registry` and `vm`.
    /// - Parameters:
    ///   - registry: the handlers whose state moves, registered alike on both ends.
    ///   - vm: the guest: the source stops it for the switchover (and resumes it if the
    ///     migration fails), the destination resumes it once everything is loaded.
    ///   - configuration: the machine configuration: the source writes it after the header, the
    ///     destination's machine type must equal the stream's.
    ///   - parameters: the migration's parameters; those both ends share must match.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public init(
        registry: HandlerRegistry, vm: any VMController, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock(),
        logger: Logger? = nil
    ) {
        self.init(
            runState: VMRunState(registry: registry, vcpus: vm), configuration: configuration, parameters: parameters,
            clock: clock, logger: logger)
    }

    /// The handlers (snapshot taken when the run starts): ``runState``'s registry.
    public var registry: HandlerRegistry { runState.registry }
    /// The guest's vCPUs (``runState``'s).
    public var vm: any VMController { runState.vcpus }
}

/// What an engine keeps for its run besides its public state: the clock, the logger, the
/// cancellation and the progress stream's producing end.
struct EngineParts: Sendable {
    let clock: any MigrationClock
    let logger: Logger
    let control = EngineControl()
    let progress: AsyncStream<MigrationProgress>
    let progressContinuation: AsyncStream<MigrationProgress>.Continuation

    init(clock: any MigrationClock, logger: Logger?) {
        self.clock = clock
        self.logger = logger ?? quietLogger()
        (progress, progressContinuation) = AsyncStream.makeStream(of: MigrationProgress.self, bufferingPolicy: .bufferingNewest(256))
    }
}

/// An engine's parts, reached by name from its run.
protocol EngineInternals: MigrationEngine {
    var parts: EngineParts { get }
}

extension EngineInternals {
    var clock: any MigrationClock { parts.clock }
    var logger: Logger { parts.logger }
    var control: EngineControl { parts.control }
    var progressContinuation: AsyncStream<MigrationProgress>.Continuation { parts.progressContinuation }
}
