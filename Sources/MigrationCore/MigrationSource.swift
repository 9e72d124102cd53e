import Logging
import MigrationStream

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
public final class MigrationSource: Sendable {
    /// The handlers to migrate (snapshot taken when `run` starts).
    public let registry: HandlerRegistry
    /// The guest's vCPUs (``runState``'s).
    public let vm: any VMController
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
    let clock: any MigrationClock
    let logger: Logger
    let control = EngineControl()
    /// The source's view of the switchover acknowledgement, published by the return path.
    let returnPathBox = Monitor<SourceReturnPath?>(nil)

    /// Progress events: at each phase change and at most once per 100 ms window. One consumer;
    /// finishes when `run` returns.
    public let progress: AsyncStream<MigrationProgress>
    let progressContinuation: AsyncStream<MigrationProgress>.Continuation

    /// - Parameters:
    ///   - registry: the handlers whose state moves, registered as on the destination.
    ///   - vm: the guest, stopped for the switchover and resumed if the migration fails.
    ///   - configuration: the machine configuration written after the header; the destination
    ///     must run the same machine type.
    ///   - parameters: the migration's parameters (downtime limit, bandwidth, switchover-ack…).
    ///   - dirtyTracking: the devices that write guest memory by DMA, and that memory.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public convenience init(
        registry: HandlerRegistry, vm: any VMController, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), dirtyTracking: DirtyTrackingConfiguration = .none,
        clock: any MigrationClock = MonotonicClock(), logger: Logger? = nil
    ) {
        self.init(
            runState: VMRunState(registry: registry, vcpus: vm), configuration: configuration, parameters: parameters,
            dirtyTracking: dirtyTracking, clock: clock, logger: logger)
    }

    /// A source on the VMM's own ``VMRunState`` (the object it pauses and resumes the guest
    /// through), so a migration and the VMM never change the run state at the same time.
    /// - Parameters:
    ///   - runState: the guest and the handlers whose state moves (its registry).
    ///   - configuration: the machine configuration written after the header.
    ///   - parameters: the migration's parameters.
    ///   - dirtyTracking: the devices that write guest memory by DMA, and that memory.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public init(
        runState: VMRunState, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), dirtyTracking: DirtyTrackingConfiguration = .none,
        clock: any MigrationClock = MonotonicClock(), logger: Logger? = nil
    ) {
        self.dirtyTracking = dirtyTracking
        self.runState = runState
        self.registry = runState.registry
        self.vm = runState.vcpus
        self.configuration = configuration
        self.parameters = parameters
        self.clock = clock
        self.logger = logger ?? quietLogger()
        (progress, progressContinuation) = AsyncStream.makeStream(of: MigrationProgress.self, bufferingPolicy: .bufferingNewest(256))
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
        for e in registry.entries { states[e.identity] = rp.ackState(of: HandlerKey(e.identity), ackEnabled: parameters.switchoverAck) }
        return SwitchoverAcknowledgement(acknowledged: rp.acknowledged, handlers: states)
    }
}

/// The source's view of the switchover acknowledgement (``MigrationSource/acknowledgement``).
public struct SwitchoverAcknowledgement: Sendable, Hashable {
    /// QEMU's single SWITCHOVER_ACK came and (extensions) no handler has withdrawn its own.
    public var acknowledged: Bool
    /// Each handler's state: ``AckState/unknown`` without extensions.
    public var handlers: [HandlerIdentity: AckState]
}

/// One source migration, on its migration thread.
final class SourceRun {
    private let owner: MigrationSource
    private let params: MigrationParameters
    private let clock: any MigrationClock
    private let logger: Logger
    private let connection: any MigrationConnection
    private let writer: StreamWriter
    private let entries: [RegisteredHandler]
    private let contexts: [EngineSaveContext]
    private let vmRunning: SharedFlag
    private let dirty: DirtyTrackingSession
    private let returnPathOn: Bool
    private let extensionsOn: Bool
    private var rp: SourceReturnPath?

    private var phase: MigrationPhase = .idle
    private let startTime: Duration
    private var setupTime: Duration = .zero
    private var weStoppedVM = false
    private var downtimeStart: Duration?

    // Per handler (index = entries index).
    private var bytes: [UInt64]
    private var sections: [Int]
    private let keyIndex: [HandlerKey: Int]

    // Iteration: counts, and the switchover decision (SwitchoverStateMachine.swift).
    private var iterations = 0
    private var rateLimitWaits = 0
    private var exactQueries = 0
    private var machine: SwitchoverStateMachine
    private var lastAckStates: [AckState] = []

    // Multifd (MultifdSource.swift).
    enum ChannelSource {
        case transport(any MigrationTransport)
        case given([any MigrationConnection])
    }
    private let channelSource: ChannelSource
    private let multifdPlan: MultifdPlan
    private var multifd: MultifdSourceSession?
    /// Entries whose pre-copy data goes over the channels (multifdPrecopy): no PART sections.
    private let precopyOverChannels: Set<Int>

    init(owner: MigrationSource, connection: any MigrationConnection, channels: ChannelSource) {
        self.owner = owner
        self.params = owner.parameters
        self.clock = owner.clock
        self.logger = owner.logger
        self.connection = connection
        self.writer = StreamWriter(sink: connection)
        let entries = owner.registry.entries
        self.entries = entries
        let running = SharedFlag(owner.vm.isRunning)
        self.vmRunning = running
        let plan = MultifdPlan(entries: entries, parameters: owner.parameters)
        self.multifdPlan = plan
        self.channelSource = channels
        self.precopyOverChannels =
            owner.parameters.multifdPrecopy
            ? Set(entries.indices.filter { plan.enabled[$0] && entries[$0].handler is any MultifdPrecopyHandler }) : []
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
        self.bytes = Array(repeating: 0, count: entries.count)
        self.sections = Array(repeating: 0, count: entries.count)
        var keyIndex: [HandlerKey: Int] = [:]
        for (i, e) in entries.enumerated() { keyIndex[HandlerKey(e.identity)] = i }
        self.keyIndex = keyIndex
        self.machine = SwitchoverStateMachine(
            configuration: .init(parameters: owner.parameters, extensions: extensionsOn, multifd: entries.indices.map { plan.enabled[$0] }),
            now: startTime, bytesWritten: 0)
        owner.control.attach(connection)
    }

    // MARK: Driver

    func run() throws -> MigrationStatistics {
        defer { owner.progressContinuation.finish() }
        do {
            try validate()
            try dirty.start(parameters: params)
            try header()
            try setup()
            try iterate()
            try complete()
        } catch {
            throw fail(error)
        }
        return succeed()
    }

    private func validate() throws {
        if params.switchoverAck && !params.returnPath {
            throw MigrationError.invalidParameters("switchover-ack needs the return path (QEMU refuses it too)")
        }
        if params.switchoverAck && !connection.supportsReturnPath {
            throw MigrationError.invalidParameters("switchover-ack needs a return path, and this transport (\(connection)) has none")
        }
        guard params.downtimeLimit >= .zero, params.downtimeLimit <= .seconds(2000) else {
            throw MigrationError.invalidParameters("the downtime limit must be 0 to 2000 s (QEMU's range), not \(params.downtimeLimit)")
        }
        for (name, value) in [("stall timeout", params.stallTimeout), ("switchover timeout", params.switchoverTimeout)] {
            if let value, value <= .zero { throw MigrationError.invalidParameters("the \(name) must be positive or nil, not \(value)") }
        }
        if let cap = params.maxBandwidth, cap < 10 {
            throw MigrationError.invalidParameters("a bandwidth cap of \(cap) B/s leaves nothing per 100 ms window")
        }
        try validateMultifd()
    }

    private func validateMultifd() throws {
        try MultifdPlan.validate(params)
        if let refusal = multifdPlan.refusal { throw MigrationError.invalidParameters(refusal) }
        guard params.multifdChannels > 0 else { return }
        switch channelSource {
        case .transport(let t):
            if t is FileTransport || t is DescriptorTransport {
                throw MigrationError.invalidParameters(
                    "multifd channels need a transport that can open more connections (tcp:, unix:), not \(t)")
            }
        case .given(let list):
            guard list.count == params.multifdChannels else {
                throw MigrationError.invalidParameters(
                    "\(list.count) multifd channel connections given, multifdChannels is \(params.multifdChannels)")
            }
        }
    }

    /// Opens the multifd channels (each starts with its MultiFDInit) before the main header.
    private func openMultifdChannels() throws {
        let count = params.multifdChannels
        guard count > 0 else { return }
        let connections: [any MigrationConnection]
        do {
            switch channelSource {
            case .transport(let t):
                connections = try MultifdChannels.open(
                    count: count, uuid: multifdUUID(owner.configuration), writeTimeout: params.stallTimeout
                ) {
                    if owner.control.isCancelled { throw TransportError.shutDown }
                    return try t.connect()
                }
            case .given(let list):
                var iterator = list.makeIterator()
                connections = try MultifdChannels.open(
                    count: count, uuid: multifdUUID(owner.configuration), writeTimeout: params.stallTimeout
                ) {
                    guard let next = iterator.next() else { throw MultifdError.channelSetup("too few channel connections") }
                    return next
                }
            }
        } catch {
            if case .given(let list) = channelSource { for c in list { c.close() } }
            throw MigrationError(.multifdFailed, phase: phase, message: "could not open the multifd channels", cause: error)
        }
        multifd = MultifdSourceSession(connections: connections, queueDepth: params.multifdSendQueueDepth)
    }

    private func enter(_ next: MigrationPhase) {
        phase = next
        logger.debug("source phase \(next)")
        emitProgress()
    }

    private func checkAbort() throws {
        if owner.control.isCancelled { throw TransportError.shutDown }
        if let rp {
            let (shut, failure) = rp.state.withLock { ($0.shut, $0.failure) }
            if let shut, shut != 0 {
                throw MigrationError(
                    .destinationFailed, phase: phase, offset: writer.bytesWritten,
                    message: "the destination reported failure (SHUT \(shut))")
            }
            if shut != nil && phase != .finishing {
                throw MigrationError(.returnPath, phase: phase, message: "the destination ended the migration early (SHUT 0)")
            }
            if let failure {
                let closed = (failure as? StreamError).map { if case .truncated = $0 { true } else { false } } ?? false
                throw MigrationError(
                    .returnPath, phase: phase,
                    message: closed ? "the destination closed the connection without a verdict" : "the return path failed",
                    cause: failure)
            }
        }
    }

    // MARK: Header and pre-flight

    private func header() throws {
        enter(.header)
        connection.setTimeouts(read: nil, write: params.stallTimeout)
        try openMultifdChannels()
        for (i, e) in entries.enumerated() where e.handler.isActive {
            do {
                try e.handler.savePrepare(context: contexts[i])
            } catch {
                throw MigrationError(
                    .handlerFailed, phase: phase, handler: e.identity, message: "savePrepare refused the migration", cause: error)
            }
        }
        try writer.writeFileHeader()
        try writer.writeConfiguration(owner.configuration)
        if returnPathOn {
            let rp = SourceReturnPath(
                extensions: extensionsOn, known: Set(entries.map { HandlerKey($0.identity) }), clock: clock, logger: logger)
            self.rp = rp
            owner.returnPathBox.withLock { $0 = rp }
            rp.start(reading: connection)
            try writer.writeCommand(.openReturnPath)
            try writer.writeCommand(.ping(1))
        }
        guard extensionsOn, let rp else {
            try writer.flush()
            return
        }
        try writer.writeCommand(.switchoverHello(version: 1, features: SwitchoverFeatures.loadBacklog.rawValue))
        let inventory = PreflightInventory(
            machineType: owner.configuration.machineType,
            handlers: entries.filter { $0.handler.isActive }.map {
                .init(
                    idstr: $0.identity.idstr, instanceID: $0.identity.instanceID, versionID: $0.identity.versionID,
                    live: $0.handler.isLive, identity: $0.handler.preflightIdentity)
            })
        try writer.writeCommand(.preflight(try inventory.encoded()))
        try writer.flush()
        enter(.preflight)
        let answer = rp.state.wait(timeout: params.stallTimeout) { s -> (accepted: Bool, message: String)?? in
            if let r = s.preflightResult { return .some(r) }
            if s.ended || s.failure != nil || s.shut != nil || owner.control.isCancelled { return .some(nil) }
            return nil
        }
        // The destination's refusal comes first, then its SHUT(1): report the refusal.
        if let answer = answer ?? nil, !answer.accepted {
            throw MigrationError(.incompatible, phase: phase, message: "the destination refused the migration: \(answer.message)")
        }
        try checkAbort()
        guard let answer else {
            throw MigrationError(
                .stallTimeout, phase: phase,
                message: "no pre-flight answer from the destination within \(params.stallTimeout.map { "\($0)" } ?? "-")")
        }
        guard answer != nil else {
            throw MigrationError(
                .returnPath, phase: phase, message: "the return path closed before the pre-flight answer",
                cause: ReturnPathError.closed)
        }
    }

    // MARK: Setup

    private func setup() throws {
        enter(.setup)
        for i in entries.indices where entries[i].handler.isActive && entries[i].handler.isLive {
            try writeSection(.start, i) { h, w, c in try h.saveSetup(to: w, context: c) }
        }
        try flush()
        setupTime = clock.now - startTime
    }

    private func flush() throws {
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
    private func writeSection<R>(
        _ kind: SectionKind, _ i: Int,
        _ body: (any MigrationHandler, StreamWriter, SaveContext) throws -> R
    ) throws -> R {
        let e = entries[i]
        let header = SectionHeader(
            kind: kind, sectionID: e.sectionID, idstr: e.identity.idstr,
            instanceID: e.identity.instanceID, versionID: e.identity.versionID)
        let start = writer.bytesWritten
        do {
            try writer.writeSectionHeader(header)
            let result = try body(e.handler, writer, contexts[i])
            try writer.writeFooter(sectionID: e.sectionID)
            bytes[i] += UInt64(writer.bytesWritten - start)
            sections[i] += 1
            return result
        } catch {
            throw classify(
                error, phase: phase, cancelled: owner.control.isCancelled, handler: e.identity, section: header,
                offset: start, message: "\(kind) section of \(e.identity) failed")
        }
    }

    // MARK: Iteration and the switchover decision

    private var liveIndices: [Int] {
        entries.indices.filter { entries[$0].handler.isActive && entries[$0].handler.isLive }
    }

    private func iterate() throws {
        enter(.iterating)
        machine = SwitchoverStateMachine(configuration: machine.configuration, now: clock.now, bytesWritten: writer.bytesWritten)
        let live = liveIndices.filter { !precopyOverChannels.contains($0) }
        if let multifd, !precopyOverChannels.isEmpty {
            multifd.startPrecopy(
                precopyOverChannels.sorted().compactMap { i in
                    (entries[i].handler as? any MultifdPrecopyHandler).map { (i, entries[i].identity, $0, contexts[i] as SaveContext) }
                }, windowBudget: params.maxBandwidth.map { Int($0 / 10) }, clock: clock)
        }
        var multifdSent = multifd?.bytesSentSoFar ?? 0
        while true {
            try checkAbort()
            if let (identity, error) = multifd?.precopyFailure {
                throw MigrationError(
                    .multifdFailed, phase: phase, handler: identity,
                    message: "the pre-copy over the multifd channels failed", cause: multifd?.sender.failure ?? error)
            }
            let now = clock.now
            if machine.clockTick(now: now, bytesWritten: writer.bytesWritten) == .windowClosed { emitProgress() }

            // Pending: the cheap estimate, the exact figure only under the threshold.
            var figures = entries.indices.map {
                entries[$0].handler.isActive ? entries[$0].handler.pendingEstimate(context: contexts[$0]).total : 0
            }
            if machine.pendingEstimated(figures) == .queryExact {
                exactQueries += 1
                for i in entries.indices where entries[i].handler.isActive {
                    do {
                        figures[i] = try entries[i].handler.pendingExact(context: contexts[i]).total
                    } catch {
                        throw MigrationError(
                            .handlerFailed, phase: phase, handler: entries[i].identity,
                            message: "pendingExact failed", cause: error)
                    }
                }
                machine.pendingExact(figures)
            }
            feedReturnPath()
            emitProgressIfAckChanged()
            switch machine.decide(now: now, guestRunning: vmRunning.get, bytesWritten: writer.bytesWritten) {
            case .switchOver(let decision):
                logger.debug(
                    "switchover: pending \(decision.pendingBytes) ≤ threshold \(decision.thresholdBytes), predicted \(decision.predictedDowntime.map { "\($0)" } ?? "-")"
                )
                return
            case .fail(let failure):
                if case .notConverging(let why) = failure {
                    logger.warning("not converging: \(why)")
                    emitProgress()
                }
                throw error(failure)
            case .iterate(let notice?):
                switch notice {
                case .convergingAgain(let text): logger.info("\(text)")
                case .notConverging(let why): logger.warning("not converging: \(why)")
                }
                emitProgress()
            case .iterate(nil):
                break
            }

            // One pass: a PART section per eligible handler until the window's budget is spent.
            var anyMore = false
            var moved = false
            for i in live where entries[i].handler.isActiveIterate(context: contexts[i]) {
                if machine.budgetSpent(bytesWritten: writer.bytesWritten) { break }
                let before = writer.bytesWritten
                let result = try writeSection(.part, i) { h, w, c in try h.saveIterate(to: w, context: c) }
                if result == .more { anyMore = true }
                // More than an end marker (16 bytes) besides header (5) and footer (5) is movement.
                if writer.bytesWritten - before > 26 { moved = true }
            }
            emitProgressIfAckChanged()
            try flush()
            iterations += 1
            if let sent = multifd?.bytesSentSoFar, sent != multifdSent {
                multifdSent = sent
                moved = true
            }
            switch machine.passCompleted(now: clock.now, bytesWritten: writer.bytesWritten, moved: moved, anyMore: anyMore) {
            case .next:
                break
            case .fail(let failure):
                throw error(failure)
            case .sleep(let until, rateLimited: true):
                rateLimitWaits += 1
                clock.sleep(until: until)
            case .sleep(let until, rateLimited: false):
                // The idle time does not count in the bandwidth measurement.
                let t0 = clock.now
                clock.sleep(until: until)
                machine.idle(clock.now - t0)
            }
        }
    }

    /// Gives the decision what the return path has heard: the acknowledgement, load reports, backlogs.
    private func feedReturnPath() {
        guard let rp else { return }
        machine.acknowledgementChanged(rp.acknowledged)
        guard extensionsOn else { return }
        let (reports, backlogs) = rp.state.withLock { ($0.loadReports, $0.backlogs) }
        for (key, report) in reports { if let i = keyIndex[key] { machine.loadReported(report, handler: i) } }
        for (key, b) in backlogs { if let i = keyIndex[key] { machine.backlogReported(b.report, handler: i, at: b.at) } }
    }

    private func error(_ failure: SwitchoverStateMachine.Failure) -> MigrationError {
        switch failure {
        case .stall(let text):
            MigrationError(.stallTimeout, phase: phase, offset: writer.bytesWritten, message: text)
        case .acknowledgementTimeout(let text):
            MigrationError(.switchoverAckTimeout, phase: phase, message: text)
        case .notConverging(let text):
            MigrationError(.notConverging, phase: phase, offset: writer.bytesWritten, message: text)
        }
    }

    // MARK: Completion

    private func complete() throws {
        multifd?.stopPrecopy()
        enter(.completing)
        downtimeStart = clock.now
        // The vCPUs stop, every device passes the P2P barrier, then every device stops (VFIO:
        // STOP_COPY): before RAM's final pass and before any END section.
        let wasRunning = owner.vm.isRunning
        do {
            weStoppedVM = try owner.runState.stop(.switchover)
        } catch {
            weStoppedVM = wasRunning && !owner.vm.isRunning
            vmRunning.set(owner.vm.isRunning)
            let handler = (error as? VMRunStateError)?.failures.first?.handler
            throw MigrationError(.vmControlFailed, phase: phase, handler: handler, message: "the guest could not be stopped", cause: error)
        }
        vmRunning.set(false)
        dirty.log?.devicesStopped()
        // Multifd: each device's stop-copy data leaves on its own thread while the main
        // channel carries SWITCHOVER_START (always, then) and the END pass, whose bodies are
        // the handlers' dummies (docs/multifd.md).
        if let multifd {
            multifd.startSaves(
                entries.indices.filter { multifdPlan.enabled[$0] }.map {
                    ($0, entries[$0].identity, entries[$0].handler, contexts[$0] as SaveContext)
                })
        }
        if params.sendSwitchoverStart || multifdPlan.any { try writer.writeCommand(.switchoverStart) }
        for i in liveIndices {
            try writeSection(.end, i) { h, w, c in try h.saveComplete(to: w, context: c) }
        }
        if let multifd {
            try flush()
            do {
                try multifd.finish { owner.control.isCancelled }
            } catch {
                throw MigrationError(
                    .multifdFailed, phase: phase, handler: multifd.failedDevice, offset: writer.bytesWritten,
                    message: "the multifd transfer failed", cause: error)
            }
        }
        var described: [(identity: HandlerIdentity, size: Int)] = []
        for i in entries.indices where entries[i].handler.isActive && entries[i].handler.hasFullState {
            let before = writer.bytesWritten
            let header = SectionHeader(kind: .full, sectionID: 0, idstr: entries[i].identity.idstr, instanceID: 0, versionID: 0)
            try writeSection(.full, i) { h, w, c in try h.saveState(to: w, context: c) }
            described.append((entries[i].identity, writer.bytesWritten - before - header.encodedLength - 5))
        }
        try dirty.checkFinalSync(phase: phase)
        try writer.writeEOF()
        if params.vmDescription {
            let pageSize = owner.configuration.targetPageBits.map { 1 << Int($0) } ?? 4096
            try writer.writeVMDescription(vmDescriptionJSON(pageSize: pageSize, devices: described))
        }
        try flush()
        owner.control.setUncancellable()
        guard let rp else { return }
        enter(.finishing)
        let verdict = rp.state.wait(timeout: params.stallTimeout) { s -> UInt32?? in
            if let shut = s.shut { return .some(shut) }
            if s.ended || s.failure != nil { return .some(nil) }
            return nil
        }
        guard let verdict else {
            throw MigrationError(
                .stallTimeout, phase: phase,
                message: "the destination did not report its result within \(params.stallTimeout.map { "\($0)" } ?? "-")")
        }
        guard let shut = verdict else {
            let failure = rp.state.withLock { $0.failure }
            throw MigrationError(
                .returnPath, phase: phase, message: "the return path closed before the destination's verdict",
                cause: failure ?? ReturnPathError.closed)
        }
        guard shut == 0 else {
            throw MigrationError(
                .destinationFailed, phase: phase, offset: writer.bytesWritten,
                message: "the destination reported failure (SHUT \(shut))")
        }
    }

    // MARK: Endings

    private func succeed() -> MigrationStatistics {
        let end = clock.now
        let downtime = weStoppedVM ? downtimeStart.map { end - $0 } : nil
        rp?.join(timeout: .seconds(5))
        dirty.stop()
        for e in entries { e.handler.saveCleanup(succeeded: true) }
        connection.close()
        enter(.completed)
        return statistics(total: end - startTime, downtime: downtime)
    }

    private func fail(_ error: any Error) -> MigrationError {
        let cancelled = owner.control.isCancelled
        var result = classify(error, phase: phase, cancelled: cancelled, offset: writer.bytesWritten)
        if let multifd {
            // A lost channel is the root cause even when the main stream failed first (the
            // destination saw the channel end and gave up): name it.
            if !cancelled, multifd.sender.failure == nil, isConnectionLoss(result) {
                multifd.sender.waitForFailure(timeout: .milliseconds(500))
            }
            let channelFailure = multifd.sender.failure
            multifd.abort()
            if !cancelled, let channelFailure, let channel = channelFailure.channel, !(result.cause is MultifdError) {
                result = MigrationError(
                    .multifdFailed, phase: result.phase, offset: writer.bytesWritten,
                    message: "multifd channel \(channel) failed", cause: channelFailure)
            }
        } else if case .given(let list) = channelSource {
            for c in list {
                c.shutdown()
                c.close()
            }
        }
        if let rp {
            // A write that failed because the destination gave up and closed: prefer its verdict.
            if !cancelled, isConnectionLoss(result) {
                rp.join(timeout: .milliseconds(500))
                if let shut = rp.state.withLock({ $0.shut }), shut != 0 {
                    result = MigrationError(
                        .destinationFailed, phase: result.phase, offset: writer.bytesWritten,
                        message: "the destination reported failure (SHUT \(shut))", cause: result)
                }
            }
            rp.stop()
        }
        connection.shutdown()
        rp?.join(timeout: .seconds(5))
        logger.info("source failed: \(result)")
        // The guest we stopped runs again, its devices first (RUNNING_P2P on all, then RUNNING
        // on all); cleanup then finds them running. A guest that was paused before the
        // migration stays paused, and cleanup puts its devices back.
        if weStoppedVM {
            do {
                try owner.runState.start(.migrationFailed)
            } catch {
                logger.error("after the failed migration: \(error)")
            }
        }
        dirty.stop()
        for e in entries { e.handler.saveCleanup(succeeded: false) }
        vmRunning.set(owner.vm.isRunning)
        connection.close()
        enter(cancelled ? .cancelled : .failed)
        return result
    }

    private func isConnectionLoss(_ error: MigrationError) -> Bool {
        var underlying = error.cause
        while let u = underlying {
            if let t = u as? TransportError {
                switch t {
                case .connectionClosed, .shutDown: return true
                default: return false
                }
            }
            if (u as? MigrationError)?.code == .returnPath { return true }
            if case .channelFailed(_, _, let cause) = u as? MultifdError {
                underlying = cause
                continue
            }
            underlying = (u as? MigrationError)?.cause
        }
        if error.code == .returnPath { return true }
        return false
    }

    // MARK: Reporting

    private func handlerAckState(_ i: Int) -> AckState {
        guard params.switchoverAck else { return .notNeeded }
        return rp?.ackState(of: HandlerKey(entries[i].identity), ackEnabled: true) ?? .unknown
    }

    /// An acknowledgement given or withdrawn is reported at once, not at the next window.
    private func emitProgressIfAckChanged() {
        guard params.switchoverAck else { return }
        let states = entries.indices.map(handlerAckState)
        if states != lastAckStates {
            lastAckStates = states
            emitProgress()
        }
    }

    private func emitProgress() {
        let pending = machine.pending
        let event = MigrationProgress(
            phase: phase, elapsed: clock.now - startTime, bytesTransferred: UInt64(writer.bytesWritten),
            iterations: iterations, pendingBytes: pending.saturatingSum, bandwidth: machine.bandwidthPerMs * 1000,
            thresholdBytes: machine.threshold, predictedDowntimeQEMU: machine.predictionQEMU, predictedDowntime: machine.prediction?.total,
            switchoverAcknowledged: !params.switchoverAck || (rp?.acknowledged ?? false),
            handlers: entries.indices.map {
                HandlerProgress(identity: entries[$0].identity, bytes: bytes[$0], pending: pending[$0], ackState: handlerAckState($0))
            },
            converging: machine.converging, prediction: machine.prediction, dirtyTracking: dirty.log?.kind)
        owner.progressContinuation.yield(event)
    }

    private func statistics(total: Duration, downtime: Duration?) -> MigrationStatistics {
        let reports = rp?.state.withLock { $0.loadReports } ?? [:]
        let multifdBytes = multifd?.bytesPerEntry ?? [:]
        return MigrationStatistics(
            totalTime: total, setupTime: setupTime, downtime: downtime,
            downtimeEnd: rp == nil ? .eofWritten : .destinationShut, decision: machine.decision,
            bytesTransferred: UInt64(writer.bytesWritten), iterations: iterations, rateLimitWaits: rateLimitWaits,
            exactQueries: exactQueries, usedExtensions: extensionsOn,
            multifdChannels: multifd?.sender.channelCount ?? 0, multifdBytes: multifd?.sender.bytesWritten ?? 0,
            handlers: entries.indices.map { i in
                let report = reports[HandlerKey(entries[i].identity)]
                return HandlerStatistics(
                    identity: entries[i].identity, bytes: bytes[i] + (multifdBytes[i] ?? 0), sections: sections[i],
                    loadTime: report.map { .microseconds(Int64($0.loadMicros)) },
                    bytesLoaded: report?.bytesLoaded, ackState: handlerAckState(i))
            }, dirtyTracking: dirty.log?.statistics)
    }
}
