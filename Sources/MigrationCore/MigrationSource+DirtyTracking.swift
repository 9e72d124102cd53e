import Logging
import MigrationStream

extension MigrationSource {
    /// A source on a run state of its own over `registry` and `vm`, whose guest has devices that
    /// write its memory by DMA (``dirtyTracking``).
    /// - Parameters:
    ///   - registry: the handlers whose state moves, registered as on the destination.
    ///   - vm: the guest, stopped for the switchover and resumed if the migration fails.
    ///   - configuration: the machine configuration written after the header.
    ///   - parameters: the migration's parameters (``MigrationParameters/allowUntrackedDMA``).
    ///   - dirtyTracking: the DMA-writing devices and the guest memory they may write.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public convenience init(
        registry: HandlerRegistry, vm: any VMController, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), dirtyTracking: DirtyTrackingConfiguration,
        clock: any MigrationClock = MonotonicClock(), logger: Logger? = nil
    ) {
        self.init(
            runState: VMRunState(registry: registry, vcpus: vm), configuration: configuration, parameters: parameters,
            dirtyTracking: dirtyTracking, clock: clock, logger: logger)
    }
}
