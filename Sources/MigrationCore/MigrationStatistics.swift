/// One handler in the final statistics.
public struct HandlerStatistics: Sendable, Hashable {
    /// Which handler.
    public var identity: HandlerIdentity
    /// Source: bytes written for the handler, by section kind. Destination: body bytes loaded.
    public var bytes: UInt64
    /// Sections written (source) or loaded (destination).
    public var sections: Int
    /// Time the destination spent in the handler's `loadState` (reported by it over the return
    /// path with extensions on; measured directly on the destination).
    public var loadTime: Duration?
    /// Bytes the destination reports having loaded for the handler.
    public var bytesLoaded: UInt64?
    /// The handler's acknowledgement state at the end.
    public var ackState: AckState
}

/// What the source measured and predicted at its switchover decision.
public struct SwitchoverDecision: Sendable, Hashable {
    /// Pending bytes at the decision (the exact figure when it was taken).
    public var pendingBytes: UInt64
    /// bandwidth × downtime limit.
    public var thresholdBytes: UInt64
    /// Bytes per second used for the decision.
    public var bandwidth: Double
    public var predictedDowntimeQEMU: Duration?
    public var predictedDowntime: Duration?
    /// Whether the prediction with the destination's load time took part in the decision.
    public var countedDestinationLoadTime: Bool
    /// The parts of ``predictedDowntime``.
    public var prediction: DowntimePrediction? = nil
}

/// Where the source stopped its downtime clock.
public enum DowntimeEnd: String, Sendable, Hashable {
    /// At the destination's SHUT(0) (return path on): includes its load and resume.
    case destinationShut
    /// When EOF was written and flushed (no return path): excludes the destination.
    case eofWritten
}

/// The final statistics of a source migration.
public struct MigrationStatistics: Sendable, Hashable {
    public var totalTime: Duration
    /// From the start to the end of the START sections.
    public var setupTime: Duration
    /// From `stopVM` to ``downtimeEnd``; nil when the guest was not running.
    public var downtime: Duration?
    public var downtimeEnd: DowntimeEnd
    /// The decision that ended the live phase.
    public var decision: SwitchoverDecision?
    public var bytesTransferred: UInt64
    /// Iteration passes (each gives every eligible handler at most one PART section).
    public var iterations: Int
    /// Times a pass stopped because the window's budget was spent, then slept.
    public var rateLimitWaits: Int
    /// Times the exact pending figure was queried.
    public var exactQueries: Int
    /// Whether the destination spoke Switchover's extensions.
    public var usedExtensions: Bool
    /// Multifd channels used besides the main one.
    public var multifdChannels: Int = 0
    /// Bytes written on the multifd channels (packets with their headers); not in ``bytesTransferred``.
    public var multifdBytes: UInt64 = 0
    /// Per handler; a multifd device's ``HandlerStatistics/bytes`` include its packet buffers.
    public var handlers: [HandlerStatistics]
}

/// The final statistics of an incoming migration.
public struct IncomingStatistics: Sendable, Hashable {
    public var totalTime: Duration
    public var bytesTransferred: UInt64
    /// The source's machine configuration.
    public var configuration: MachineConfigurationSummary
    /// Whether the source said hello (Switchover's extensions).
    public var usedExtensions: Bool
    /// Whether a return path was opened.
    public var returnPathOpened: Bool
    /// Time from EOF to the guest resumed.
    public var resumeTime: Duration
    /// Multifd channels accepted besides the main one.
    public var multifdChannels: Int = 0
    /// Per handler; a multifd device's bytes and load time include its packet buffers.
    public var handlers: [HandlerStatistics]
}

/// The source's machine type as it arrived.
public struct MachineConfigurationSummary: Sendable, Hashable {
    public var machineType: String
}
