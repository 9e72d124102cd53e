import Logging
import MigrationStream

// SourceRun is split by phase across files: this one holds its state, the driver and the
// section writing every phase uses; SourceRun+Setup (parameters, header, pre-flight, setup),
// SourceRun+Iteration (the pre-copy loop and the switchover decision), SourceRun+Completion
// (switchover and the verdict), SourceRun+Cleanup (failure and cancel), SourceRun+Reporting
// (progress and statistics).

/// One source migration, on its migration thread.
final class SourceRun: EngineRun {
    static let side = "source"

    let owner: MigrationSource
    let connection: any MigrationConnection
    let writer: StreamWriter
    let entries: [RegisteredHandler]
    let contexts: [EngineSaveContext]
    let vmRunning: SharedValue<Bool>
    let dirty: DirtyTrackingSession
    let returnPathOn: Bool
    let extensionsOn: Bool
    var rp: SourceReturnPath?

    var phase: MigrationPhase = .idle
    let startTime: Duration
    var setupTime: Duration = .zero
    /// When setup began and the bytes written by then: the first bandwidth window starts there,
    /// so that what setup sends is measured (a device with no pre-copy data sends nothing after).
    var setupStart: (time: Duration, bytes: Int) = (.zero, 0)
    var weStoppedVM = false
    var downtimeStart: Duration?

    // Per handler (index = entries index).
    var tally: SectionTally
    let keyIndex: [HandlerIdentity.Key: Int]

    // Iteration: counts, and the switchover decision (SwitchoverStateMachine.swift).
    var iterations = 0
    var rateLimitWaits = 0
    var exactQueries = 0
    var machine: SwitchoverStateMachine
    var lastAckStates: [AckState] = []

    // Multifd (MultifdSource.swift).
    enum ChannelSource {
        case transport(any MigrationTransport)
        case given([any MigrationConnection])
    }
    let channelSource: ChannelSource
    let multifdPlan: MultifdPlan
    var multifd: MultifdSourceSession?
    /// Entries whose pre-copy data goes over the channels (multifdPrecopy): no PART sections.
    let precopyOverChannels: Set<Int>

    init(owner: MigrationSource, connection: any MigrationConnection, channels: ChannelSource) {
        self.owner = owner
        self.connection = connection
        self.writer = StreamWriter(sink: connection)
        let entries = owner.registry.entries
        self.entries = entries
        let running = SharedValue(owner.vm.isRunning)
        self.vmRunning = running
        let plan = MultifdPlan(entries: entries, parameters: owner.parameters)
        self.multifdPlan = plan
        self.channelSource = channels
        self.precopyOverChannels =
            owner.parameters.multifdPrecopy
            ? Set(entries.indices.filter { plan.enabled[$0] && entries[$0].handler.multifdSupport.contains(.precopy) }) : []
        let participants = entries.filter { $0.handler.isActive }.map(\.handler)
        let dirty = DirtyTrackingSession(owner.dirtyTracking)
        self.dirty = dirty
        self.contexts = entries.indices.map {
            EngineSaveContext(
                identity: entries[$0].identity, switchoverAckEnabled: owner.parameters.switchoverAck,
                multifdTransfer: plan.enabled[$0], running: running, parameters: owner.parameters,
                participants: participants, dirtyTracking: dirty)
        }
        self.returnPathOn = owner.parameters.returnPath && connection.supportsReturnPath
        let extensionsOn = owner.parameters.extensions && owner.parameters.returnPath && connection.supportsReturnPath
        self.extensionsOn = extensionsOn
        self.startTime = owner.clock.now
        self.tally = SectionTally(count: entries.count)
        self.keyIndex = entries.indexByKey
        self.machine = SwitchoverStateMachine(
            configuration: .init(parameters: owner.parameters, extensions: extensionsOn, multifd: entries.indices.map { plan.enabled[$0] }),
            now: startTime, bytesWritten: 0)
        owner.control.attach(connection)
    }

    // MARK: Driver

    func run() throws -> MigrationStatistics {
        try drive {
            try validate()
            try dirty.start(parameters: params)
            try header()
            try setup()
            try iterate()
            try complete()
        } then: {
            succeed()
        }
    }

    /// Throws when the migration was cancelled, or the return path says it is over.
    func checkAbort() throws {
        if owner.control.isCancelled { throw TransportError.shutDown }
        try rp?.checkNotEnded(phase: phase, offset: writer.bytesWritten)
    }

    func flush() throws {
        do {
            try writer.flush()
        } catch {
            throw classify(
                error, phase: phase, cancelled: owner.control.isCancelled, offset: writer.bytesWritten,
                message: "writing the stream failed")
        }
    }

    /// Writes one section (header, body from `body`, footer) for entry `i`, counting its bytes.
    @discardableResult
    func writeSection<R>(
        _ kind: SectionKind, _ i: Int,
        _ body: (any MigrationHandler, StreamWriter, SaveContext) throws -> R
    ) throws -> R {
        let e = entries[i]
        let header = SectionHeader(kind: kind, sectionID: e.sectionID, binding: e.identity)
        let start = writer.bytesWritten
        do {
            try writer.writeSectionHeader(header)
            let result = try body(e.handler, writer, contexts[i])
            try writer.writeFooter(sectionID: e.sectionID)
            tally.add(i, bytes: UInt64(writer.bytesWritten - start))
            return result
        } catch {
            throw classify(
                error, phase: phase, cancelled: owner.control.isCancelled, handler: e.identity, section: header,
                offset: start, message: "\(kind) section of \(e.identity) failed")
        }
    }

}
