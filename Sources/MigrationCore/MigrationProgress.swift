/// One handler's switchover-acknowledgement state as an engine knows it.
public enum AckState: String, Sendable, Hashable {
    /// Switchover-ack is off, or the handler does not need an acknowledgement.
    case notNeeded
    /// The source does not know (a QEMU destination tells only the total).
    case unknown
    /// Waiting for the handler's initial data to be loaded.
    case pending
    /// Acknowledged.
    case acknowledged
    /// Acknowledged, then withdrawn (new initial data); waiting again.
    case revoked
}

/// One handler in a progress event.
public struct HandlerProgress: Sendable, Hashable {
    /// Which handler.
    public var identity: HandlerIdentity
    /// Source: bytes written for the handler (headers, bodies, footers). Destination: section
    /// body bytes loaded.
    public var bytes: UInt64
    /// Source: the handler's last pending estimate (or exact figure when one was taken).
    public var pending: UInt64
    /// Its switchover acknowledgement.
    public var ackState: AckState
}

/// A progress event (``MigrationSource/progress``, ``MigrationDestination/progress``).
public struct MigrationProgress: Sendable, Hashable {
    /// Where the migration is.
    public var phase: MigrationPhase
    /// Time since `run` started, on the engine's clock.
    public var elapsed: Duration
    /// Source: bytes written so far. Destination: bytes read.
    public var bytesTransferred: UInt64
    /// Source: completed iteration passes.
    public var iterations: Int
    /// Source: the sum of the handlers' pending figures.
    public var pendingBytes: UInt64
    /// Source: measured bandwidth (or ``MigrationParameters/switchoverBandwidth``), bytes/s.
    public var bandwidth: Double
    /// Source: bytes that may be left for the switchover: bandwidth × downtime limit.
    public var thresholdBytes: UInt64
    /// Source: QEMU's prediction: pending / bandwidth.
    public var predictedDowntimeQEMU: Duration?
    /// Source: ours: QEMU's plus the destination's reported load time for the pending data.
    public var predictedDowntime: Duration?
    /// Whether switchover-ack is on and the acknowledgement is currently given (true when off).
    public var switchoverAcknowledged: Bool
    /// Each handler, in registry order.
    public var handlers: [HandlerProgress]
    /// Source: false while the pending data has not reached a new low for
    /// ``MigrationParameters/convergenceWindow`` (see there); true otherwise and on a destination.
    public var converging = true
    /// Source: the parts of ``predictedDowntime`` (nil before the first bandwidth sample).
    public var prediction: DowntimePrediction? = nil
    /// Source: how guest pages written by device DMA are tracked (nil: no DMA-writing device
    /// registered, or before tracking starts).
    public var dirtyTracking: DirtyTrackingKind? = nil
}

/// The source's downtime prediction and its parts: ``total`` = ``destinationBacklog`` +
/// ``transfer`` + ``finalLoad``.
public struct DowntimePrediction: Sendable, Hashable {
    /// The pending bytes over the bandwidth: QEMU's whole prediction.
    public var transfer: Duration
    /// The time until the destination has loaded what it already received (its LOAD_BACKLOG
    /// reports, as old as they are): it reads nothing new before that.
    public var destinationBacklog: Duration
    /// Loading the final data on the destination after its last byte arrives (its LOAD_REPORT
    /// rates and fixed costs), on the longest path: the main channel's devices one after the
    /// other, each device whose final data goes over multifd channels in parallel with them
    /// and with each other.
    public var finalLoad: Duration
    /// The predicted downtime.
    public var total: Duration

    public init(transfer: Duration, destinationBacklog: Duration, finalLoad: Duration) {
        (self.transfer, self.destinationBacklog, self.finalLoad) = (transfer, destinationBacklog, finalLoad)
        self.total = .predictionSum(.predictionSum(transfer, destinationBacklog), finalLoad)
    }
}
