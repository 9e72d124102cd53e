import Logging
import MigrationStream

// DestinationRun is split by phase across files: this one holds its state, the driver and its
// reporting; DestinationRun+Setup (header, configuration, setup), DestinationRun+Loading (the
// record loop, sections, commands), DestinationRun+Completion (the guest resumed, the verdict,
// failure and cancel).

/// One incoming migration, on its load thread.
final class DestinationRun: EngineRun {
    static let side = "destination"

    let owner: MigrationDestination
    let connection: any MigrationConnection
    let reader: StreamReader
    /// The main channel as the reader sees it, counting the time reads block.
    let timedSource: TimedByteSource
    /// The minimum receive rate over the main stream and the multifd channels.
    let watchdog: ReceiveWatchdog?
    let entries: [RegisteredHandler]
    let index: [HandlerIdentity.Key: Int]
    let rp: ReturnPathWriter
    let acks: DestinationAcks
    let contexts: [EngineLoadContext]

    var phase: MigrationPhase = .idle
    let startTime: Duration
    var extensionsActive = false
    var sourceMachine = ""
    var resumeTime: Duration = .zero
    var lastProgress: Duration = .zero

    var tally: LoadTally

    // Multifd (MultifdDestination.swift).
    let channels: [AcceptedChannel]
    let multifdPlan: MultifdPlan
    var multifd: MultifdDestinationSession?
    /// LOAD_BACKLOG while the destination works (a source that asked for it).
    var backlogReporter: DestinationBacklogReporter?
    /// The main-stream offset through which every record is loaded (read by the reporter).
    let loadedThrough = SharedValue<UInt64>(0)

    init(owner: MigrationDestination, connection: any MigrationConnection, channels: [AcceptedChannel]) {
        self.owner = owner
        self.connection = connection
        let watchdog = owner.parameters.minimumReceiveRate.map {
            ReceiveWatchdog(minimumRate: $0, window: owner.parameters.stallTimeout ?? .seconds(30))
        }
        self.watchdog = watchdog
        let timedSource = TimedByteSource(connection, clock: owner.clock, watchdog: watchdog)
        self.timedSource = timedSource
        self.reader = StreamReader(source: timedSource)
        let entries = owner.registry.entries
        self.entries = entries
        self.index = entries.indexByKey
        let rp = ReturnPathWriter(connection: connection)
        self.rp = rp
        let acks = DestinationAcks(rp: rp, logger: owner.logger)
        self.acks = acks
        let plan = MultifdPlan(entries: entries, parameters: owner.parameters)
        self.multifdPlan = plan
        self.channels = channels
        self.contexts = entries.indices.map {
            EngineLoadContext(
                identity: entries[$0].identity, switchoverAckEnabled: owner.parameters.switchoverAck,
                multifdTransfer: plan.enabled[$0], acks: acks)
        }
        self.startTime = owner.clock.now
        self.tally = LoadTally(count: entries.count)
        owner.control.attach(connection)
    }

    func run() throws -> IncomingStatistics {
        try drive {
            if let refusal = multifdPlan.refusal { throw MigrationError.invalidParameters(refusal) }
            try header()
            try setup()
            try load()
            try finish()
        } then: {
            statistics()
        }
    }

    func wrap(
        _ error: any Error, handler: HandlerIdentity? = nil, section: SectionHeader? = nil,
        offset: Int? = nil, message: String? = nil
    ) -> MigrationError {
        classify(
            error, phase: phase, cancelled: owner.control.isCancelled, handler: handler, section: section,
            offset: offset ?? reader.offset, message: message)
    }

    func emitProgress() {
        let event = MigrationProgress(
            phase: phase, elapsed: clock.now - startTime, bytesTransferred: UInt64(reader.offset), iterations: 0,
            pendingBytes: 0, bandwidth: 0, thresholdBytes: 0, predictedDowntimeQEMU: nil, predictedDowntime: nil,
            switchoverAcknowledged: acks.allAcknowledged,
            handlers: entries.indices.map {
                HandlerProgress(
                    identity: entries[$0].identity, bytes: tally.moved.bytes[$0], pending: 0,
                    ackState: acks.ackState(entries[$0].identity.key))
            })
        owner.progressContinuation.yield(event)
    }

    func statistics() -> IncomingStatistics {
        let extra = multifd?.statisticsPerEntry ?? [:]
        return IncomingStatistics(
            totalTime: clock.now - startTime, bytesTransferred: UInt64(reader.offset),
            configuration: MachineConfigurationSummary(machineType: sourceMachine), usedExtensions: extensionsActive,
            returnPathOpened: rp.isOpen, resumeTime: resumeTime, multifdChannels: channels.count,
            handlers: entries.indices.map {
                let m = extra[$0]
                return HandlerStatistics(
                    identity: entries[$0].identity, bytes: tally.moved.bytes[$0] + (m?.bytes ?? 0), sections: tally.moved.sections[$0],
                    loadTime: tally.loadTime[$0] + (m?.loadTime ?? .zero), bytesLoaded: tally.moved.bytes[$0] + (m?.bytes ?? 0),
                    ackState: acks.ackState(entries[$0].identity.key))
            })
    }
}
