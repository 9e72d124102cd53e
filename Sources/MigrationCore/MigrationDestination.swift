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
public final class MigrationDestination: Sendable {
    /// The handlers sections are dispatched to (snapshot taken when `run` starts).
    public let registry: HandlerRegistry
    /// The guest's vCPUs (``runState``'s).
    public let vm: any VMController
    /// The VM's run state: started after a successful stream (every device RUNNING_P2P, then
    /// every device RUNNING, then the vCPUs), or — with ``MigrationParameters/resumeOnCompletion``
    /// off — left stopped, devices in STOP, until the VMM calls ``VMRunState/start(_:)``.
    public let runState: VMRunState
    /// The local machine configuration the stream's must match.
    public let configuration: MachineConfiguration
    public let parameters: MigrationParameters
    let clock: any MigrationClock
    let logger: Logger
    let control = EngineControl()

    /// Progress events: at each phase change and at most every 100 ms while loading.
    public let progress: AsyncStream<MigrationProgress>
    let progressContinuation: AsyncStream<MigrationProgress>.Continuation

    /// - Parameters:
    ///   - registry: the handlers to load sections into, registered as on the source.
    ///   - vm: the guest to resume once everything is loaded.
    ///   - configuration: this destination's machine; the stream's machine type must equal it.
    ///   - parameters: the migration's parameters; those both ends share must match the source's.
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public convenience init(
        registry: HandlerRegistry, vm: any VMController, configuration: MachineConfiguration,
        parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock(),
        logger: Logger? = nil
    ) {
        self.init(
            runState: VMRunState(registry: registry, vcpus: vm), configuration: configuration, parameters: parameters,
            clock: clock, logger: logger)
    }

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
        self.registry = runState.registry
        self.vm = runState.vcpus
        self.configuration = configuration
        self.parameters = parameters
        self.clock = clock
        self.logger = logger ?? quietLogger()
        (progress, progressContinuation) = AsyncStream.makeStream(of: MigrationProgress.self, bufferingPolicy: .bufferingNewest(256))
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
                        for c in [connection] + multifdChannels {
                            c.shutdown()
                            c.close()
                        }
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

/// One incoming migration, on its load thread.
final class DestinationRun {
    private let owner: MigrationDestination
    private let params: MigrationParameters
    private let clock: any MigrationClock
    private let logger: Logger
    private let connection: any MigrationConnection
    private let reader: StreamReader
    /// The main channel as the reader sees it, counting the time reads block.
    private let timedSource: TimedByteSource
    /// The minimum receive rate over the main stream and the multifd channels.
    private let watchdog: ReceiveWatchdog?
    private let entries: [RegisteredHandler]
    private let index: [HandlerKey: Int]
    private let rp: ReturnPathWriter
    private let acks: DestinationAcks
    private let contexts: [EngineLoadContext]

    private var phase: MigrationPhase = .idle
    private let startTime: Duration
    private var extensionsActive = false
    private var sourceMachine = ""
    private var resumeTime: Duration = .zero
    private var lastProgress: Duration = .zero

    private var bytes: [UInt64]
    private var loadTime: [Duration]
    /// What was loaded once a handler's initial data was in: the final data's rate basis.
    private var rateBytes: [UInt64]
    private var rateTime: [Duration]
    private var sections: [Int]
    private var lastReport: [Duration?]
    private var sectionsSinceReport: [Int]

    // Multifd (MultifdDestination.swift).
    private let channels: [AcceptedChannel]
    private let multifdPlan: MultifdPlan
    private var multifd: MultifdDestinationSession?
    /// LOAD_BACKLOG while the destination works (a source that asked for it).
    private var backlogReporter: DestinationBacklogReporter?
    /// The main-stream offset through which every record is loaded (read by the reporter).
    private let loadedThrough = Monitor<UInt64>(0)

    init(owner: MigrationDestination, connection: any MigrationConnection, channels: [AcceptedChannel]) {
        self.owner = owner
        self.params = owner.parameters
        self.clock = owner.clock
        self.logger = owner.logger
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
        var index: [HandlerKey: Int] = [:]
        for (i, e) in entries.enumerated() { index[HandlerKey(e.identity)] = i }
        self.index = index
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
        self.bytes = Array(repeating: 0, count: entries.count)
        self.loadTime = Array(repeating: .zero, count: entries.count)
        self.rateBytes = Array(repeating: 0, count: entries.count)
        self.rateTime = Array(repeating: .zero, count: entries.count)
        self.sections = Array(repeating: 0, count: entries.count)
        self.lastReport = Array(repeating: nil, count: entries.count)
        self.sectionsSinceReport = Array(repeating: 0, count: entries.count)
        owner.control.attach(connection)
    }

    func run() throws -> IncomingStatistics {
        defer { owner.progressContinuation.finish() }
        do {
            if let refusal = multifdPlan.refusal { throw MigrationError.invalidParameters(refusal) }
            try header()
            try setup()
            try load()
            try finish()
        } catch {
            throw fail(error)
        }
        return statistics()
    }

    private func enter(_ next: MigrationPhase) {
        phase = next
        logger.debug("destination phase \(next)")
        emitProgress()
    }

    private func wrap(
        _ error: any Error, handler: HandlerIdentity? = nil, section: SectionHeader? = nil,
        offset: Int? = nil, message: String? = nil
    ) -> MigrationError {
        classify(
            error, phase: phase, cancelled: owner.control.isCancelled, handler: handler, section: section,
            offset: offset ?? reader.offset, message: message)
    }

    // MARK: Header and configuration

    private func header() throws {
        enter(.header)
        connection.setTimeouts(read: params.stallTimeout, write: params.stallTimeout)
        let config: MachineConfiguration
        do {
            try reader.readFileHeader()
            config = try reader.readConfiguration()
        } catch {
            throw wrap(error, message: "the stream header or configuration could not be read")
        }
        sourceMachine = config.machineType
        let local = owner.configuration
        func refuse(_ text: String) -> MigrationError {
            MigrationError(.incompatible, phase: phase, offset: reader.offset, message: text)
        }
        guard config.machineType == local.machineType else {
            throw refuse(
                "machine type mismatch: the stream is for \"\(config.machineType)\", this destination runs \"\(local.machineType)\"")
        }
        if let theirs = config.targetPageBits, let ours = local.targetPageBits, theirs != ours {
            throw refuse("target page bits mismatch: the stream has \(theirs), this destination \(ours)")
        }
        if Set(config.capabilities ?? []) != Set(local.capabilities ?? []) {
            throw refuse(
                "validated capabilities differ: the stream has \(config.capabilities ?? []), this destination \(local.capabilities ?? [])")
        }
        if let theirs = config.uuid, let ours = local.uuid, theirs != ours {
            throw refuse("VM UUID mismatch")
        }
        // Every multifd channel carries the migration's uuid (the VM's, zeros without one).
        let uuid = multifdUUID(config)
        for c in channels where c.uuid != uuid {
            throw MigrationError(
                .multifdFailed, phase: phase, offset: reader.offset,
                message: "multifd channel \(c.id) belongs to another migration (its uuid differs from the stream's)",
                cause: MultifdError.channelSetup("uuid mismatch on channel \(c.id)"))
        }
    }

    // MARK: Setup

    private func setup() throws {
        enter(.setup)
        for (i, e) in entries.enumerated() where e.handler.isActive {
            do {
                try e.handler.loadSetup(context: contexts[i])
            } catch {
                throw MigrationError(.handlerFailed, phase: phase, handler: e.identity, message: "loadSetup failed", cause: error)
            }
        }
        var needed: Set<HandlerKey> = []
        if params.switchoverAck {
            for (i, e) in entries.enumerated() where e.handler.isActive && e.handler.switchoverAckNeeded(context: contexts[i]) {
                needed.insert(HandlerKey(e.identity))
            }
        }
        acks.configure(enabled: params.switchoverAck, needed: needed)
        if !channels.isEmpty {
            let session = MultifdDestinationSession(
                channels: channels, devices: entries.indices.filter { multifdPlan.enabled[$0] }.map { ($0, entries[$0].identity) },
                known: entries.map(\.identity), parameters: params, watchdog: watchdog, logger: logger)
            multifd = session
            session.startReceiving()
            // Pre-copy over the channels: the load threads run from now on.
            if params.multifdPrecopy { startMultifdLoads() }
        }
    }

    private func startMultifdLoads() {
        guard let multifd, multifd.hasDevices else { return }
        var handlers: [Int: (any MigrationHandler, LoadContext)] = [:]
        for i in entries.indices where multifdPlan.enabled[i] { handlers[i] = (entries[i].handler, contexts[i]) }
        multifd.startLoading(handlers: handlers, clock: clock)
    }

    // MARK: The load loop

    private func load() throws {
        enter(.loading)
        // Between records the source may legitimately be idle (waiting for an acknowledgement
        // or for data); inside a record, the stall timeout applies.
        let betweenRecords: Duration? = params.stallTimeout.flatMap { stall in params.switchoverTimeout.map { stall + $0 } }
        while true {
            if owner.control.isCancelled { throw TransportError.shutDown }
            if let failure = multifd?.failure { throw multifdFailure(failure) }
            connection.setTimeouts(read: betweenRecords, write: params.stallTimeout)
            let at = reader.offset
            let record: StreamRecord
            do {
                record = try reader.readRecord()
            } catch {
                throw wrap(error, offset: at, message: "could not read the next record")
            }
            connection.setTimeouts(read: params.stallTimeout, write: params.stallTimeout)
            switch record {
            case .section(let header):
                try loadSection(header, at: at)
            case .command(let command):
                try process(command, at: at)
            case .eof:
                return
            }
            let through = UInt64(reader.offset)
            loadedThrough.withLock { $0 = through }
            let now = clock.now
            if now - lastProgress >= MigrationParameters.rateLimitWindow {
                lastProgress = now
                emitProgress()
            }
        }
    }

    private func loadSection(_ header: SectionHeader, at: Int) throws {
        let key = HandlerKey(header.binding.idstr, header.binding.instanceID)
        guard let i = index[key] else {
            throw MigrationError(
                .incompatible, phase: phase, section: header, offset: at,
                message: "Unknown section or instance: \(key) (section id \(header.sectionID)) has no handler on this destination")
        }
        let e = entries[i]
        if header.binding.versionID > e.identity.versionID {
            throw MigrationError(
                .incompatible, phase: phase, handler: e.identity, section: header, offset: at,
                message:
                    "\(key): the stream's section version \(header.binding.versionID) is newer than this destination's \(e.identity.versionID)"
            )
        }
        let bodyStart = reader.offset
        // A section loaded while the handler's initial data is still coming may carry one-off
        // work (the ack exists to hide it); only later sections predict the final data's rate.
        // So may one loaded while the handler holds a backlog (an image the device loads once
        // it is whole): that time is the backlog's, reported as such, not a per-byte rate.
        var pastInitialData = [.notNeeded, .acknowledged].contains(acks.ackState(key))
        if pastInitialData, e.handler.loadBacklog(context: contexts[i]) != .none { pastInitialData = false }
        let t0 = clock.now
        let waited0 = timedSource.waited
        do {
            try e.handler.loadState(from: reader, header: header, context: contexts[i])
        } catch {
            throw wrap(
                error, handler: e.identity, section: header, offset: reader.offset,
                message: "loading the \(header.kind) section of \(e.identity) failed")
        }
        // Load time is the handler's work: the time its reads waited for the stream (the
        // source still producing the section, the link) is not the destination's cost.
        let spent = max(.zero, (clock.now - t0) - (timedSource.waited - waited0))
        let loaded = UInt64(reader.offset - bodyStart)
        loadTime[i] += spent
        bytes[i] += loaded
        if pastInitialData, e.handler.loadBacklog(context: contexts[i]) != .none { pastInitialData = false }
        if pastInitialData {
            rateTime[i] += spent
            rateBytes[i] += loaded
        }
        sections[i] += 1
        do {
            try reader.readFooter(sectionID: header.sectionID)
        } catch {
            throw wrap(
                error, handler: e.identity, section: header, offset: reader.offset,
                message: "after the \(header.kind) section of \(e.identity): its handler did not consume exactly its body")
        }
        try reportLoad(i)
    }

    /// LOAD_REPORT (extensions): a handler's load figures, at most every 100 ms or 64 sections.
    private func reportLoad(_ i: Int) throws {
        guard extensionsActive else { return }
        let now = clock.now
        sectionsSinceReport[i] += 1
        if let last = lastReport[i], now - last < MigrationParameters.rateLimitWindow, sectionsSinceReport[i] < 64 { return }
        lastReport[i] = now
        sectionsSinceReport[i] = 0
        let e = entries[i]
        let report = LoadReport(
            idstr: e.identity.idstr, instanceID: e.identity.instanceID, bytesLoaded: bytes[i],
            loadMicros: loadTime[i].wholeMicroseconds,
            fixedCostMicros: e.handler.expectedFinalLoadCostMicros(context: contexts[i]),
            rateBytes: rateBytes[i], rateMicros: rateTime[i].wholeMicroseconds)
        do {
            try rp.send(.loadReport(report))
        } catch {
            throw wrap(error, handler: e.identity, message: "sending a load report failed")
        }
    }

    private func process(_ command: MigrationCommand, at: Int) throws {
        func refuse(_ text: String) -> MigrationError {
            MigrationError(.malformedStream, phase: phase, offset: at, message: text)
        }
        do {
            switch command {
            case .openReturnPath:
                guard connection.supportsReturnPath else {
                    throw refuse("OPEN_RETURN_PATH on \(connection), which has no reverse direction")
                }
                rp.open()
                try acks.returnPathOpened()
            case .ping(let value):
                guard rp.isOpen else { throw refuse("PING \(value) before OPEN_RETURN_PATH") }
                try rp.send(.pong(value))
            case .switchoverHello(let version, let features):
                guard params.extensions else {
                    throw refuse("the source uses Switchover's extensions (SWITCHOVER_HELLO), which are off on this destination")
                }
                guard rp.isOpen else { throw refuse("SWITCHOVER_HELLO before OPEN_RETURN_PATH") }
                logger.debug("source speaks extensions version \(version), features 0x\(String(features, radix: 16))")
                extensionsActive = true
                try acks.helloReceived()
                if SwitchoverFeatures(rawValue: features).contains(.loadBacklog), backlogReporter == nil {
                    let position = loadedThrough
                    backlogReporter = try DestinationBacklogReporter(
                        handlers: entries.indices.filter { entries[$0].handler.isActive }.map {
                            (entries[$0].identity, entries[$0].handler, contexts[$0])
                        },
                        returnPath: rp, position: { position.withLock { $0 } }, logger: logger)
                }
            case .preflight(let payload):
                guard extensionsActive else { throw refuse("PREFLIGHT without SWITCHOVER_HELLO") }
                try preflight(payload, at: at)
            case .switchoverStart:
                for (i, e) in entries.enumerated() where e.handler.isActive {
                    do {
                        try e.handler.switchoverStart(context: contexts[i])
                    } catch {
                        throw MigrationError(
                            .handlerFailed, phase: phase, handler: e.identity, offset: at,
                            message: "switchoverStart failed", cause: error)
                    }
                }
                // Multifd: each device's load thread starts here (QEMU's switchover_start).
                startMultifdLoads()
            default:
                throw refuse("command \(command.name) is not supported (postcopy, COLO and packaged streams are not)")
            }
        } catch let error as MigrationError {
            throw error
        } catch {
            throw wrap(error, offset: at, message: "processing \(command.name) failed")
        }
    }

    private func preflight(_ payload: [UInt8], at: Int) throws {
        let differences: [String]
        do {
            let inventory = try PreflightInventory.decode(payload)
            differences = preflightDifferences(inventory, localMachine: owner.configuration.machineType, local: entries)
        } catch {
            differences = ["the pre-flight inventory could not be decoded: \(error)"]
        }
        let text = differences.joined(separator: "; ")
        try rp.send(.preflightResult(accepted: differences.isEmpty, message: text))
        guard differences.isEmpty else {
            throw MigrationError(.incompatible, phase: phase, offset: at, message: "the source's devices do not match: \(text)")
        }
    }

    // MARK: Endings

    private func finish() throws {
        // After EOF the source waits for the SHUT, which is the last message.
        backlogReporter?.stop(waiting: false)
        if params.vmDescription {
            do {
                guard try reader.readVMDescription() != nil else {
                    throw MigrationError(
                        .malformedStream, phase: phase, offset: reader.offset,
                        message: "the stream ended after EOF without its VMDESCRIPTION trailer")
                }
            } catch let error as MigrationError {
                throw error
            } catch {
                throw wrap(error, message: "the VMDESCRIPTION trailer could not be read")
            }
        }
        // Every multifd device loads its last buffer, every channel ends.
        if let multifd {
            do {
                try multifd.finish { owner.control.isCancelled }
            } catch let error as MultifdError {
                throw multifdFailure(error)
            }
        } else if let i = entries.indices.first(where: { multifdPlan.enabled[$0] }) {
            throw multifdFailure(.switchoverStartMissing(device: entries[i].identity))
        }
        // Each handler commits what it loaded (a VFIO device leaves RESUMING) before the guest
        // resumes; a refusal here fails the migration and the source keeps its VM.
        for (i, e) in entries.enumerated() where e.handler.isActive {
            do {
                try e.handler.loadComplete(context: contexts[i])
            } catch {
                throw MigrationError(
                    .handlerFailed, phase: phase, handler: e.identity, offset: reader.offset,
                    message: "\(e.identity) could not complete its load", cause: error)
            }
        }
        enter(.resuming)
        let t0 = clock.now
        if params.resumeOnCompletion {
            // Every device RUNNING_P2P, then every device RUNNING, then the vCPUs. Without
            // autostart the devices stay in STOP until the VMM starts the guest.
            do {
                try owner.runState.start(.incomingMigration)
            } catch {
                let handler = (error as? VMRunStateError)?.failures.first?.handler
                throw MigrationError(
                    .vmControlFailed, phase: phase, handler: handler, message: "the guest could not be started", cause: error)
            }
        }
        resumeTime = clock.now - t0
        multifd?.close()
        for e in entries { e.handler.loadCleanup(succeeded: true) }
        do {
            try rp.send(.shut(0))
        } catch {
            logger.error("the guest runs here, but SHUT(0) could not be sent: \(error)")
        }
        backlogReporter?.stop()
        connection.close()
        enter(.completed)
    }

    private func fail(_ error: any Error) -> MigrationError {
        let cancelled = owner.control.isCancelled
        var result = classify(error, phase: phase, cancelled: cancelled, offset: reader.offset)
        // A multifd failure shuts the channels, so the source fails and cuts the main stream:
        // report the multifd cause rather than the cut.
        if let multifd {
            if !cancelled, multifd.failure == nil, Self.isStreamLoss(error) { multifd.waitForFailure(timeout: .milliseconds(500)) }
            let failure = multifd.failure
            multifd.abort()
            if !cancelled, let failure, !(result.cause is MultifdError) { result = multifdFailure(failure) }
        } else {
            for c in channels {
                c.connection.shutdown()
                c.connection.close()
            }
        }
        logger.info("destination failed: \(result)")
        backlogReporter?.stop()
        for e in entries { e.handler.loadCleanup(succeeded: false) }
        do {
            try rp.send(.shut(1))
        } catch {
            logger.debug("SHUT(1) could not be sent: \(error)")
        }
        connection.shutdown()
        connection.close()
        enter(cancelled ? .cancelled : .failed)
        return result
    }

    /// The main stream ended or broke (rather than carrying something wrong).
    private static func isStreamLoss(_ error: any Error) -> Bool {
        var next: (any Error)? = error
        while let e = next {
            if e is TransportError { return true }
            if case .truncated? = e as? StreamError { return true }
            next = (e as? MigrationError)?.cause
        }
        return false
    }

    private func multifdFailure(_ error: MultifdError) -> MigrationError {
        MigrationError(
            .multifdFailed, phase: phase, handler: MultifdDestinationSession.device(of: error),
            message: error.channel.map { "multifd channel \($0) failed" } ?? "the multifd transfer failed",
            cause: error)
    }

    private func emitProgress() {
        let event = MigrationProgress(
            phase: phase, elapsed: clock.now - startTime, bytesTransferred: UInt64(reader.offset), iterations: 0,
            pendingBytes: 0, bandwidth: 0, thresholdBytes: 0, predictedDowntimeQEMU: nil, predictedDowntime: nil,
            switchoverAcknowledged: acks.allAcknowledged,
            handlers: entries.indices.map {
                HandlerProgress(
                    identity: entries[$0].identity, bytes: bytes[$0], pending: 0,
                    ackState: acks.ackState(HandlerKey(entries[$0].identity)))
            })
        owner.progressContinuation.yield(event)
    }

    private func statistics() -> IncomingStatistics {
        let extra = multifd?.statisticsPerEntry ?? [:]
        return IncomingStatistics(
            totalTime: clock.now - startTime, bytesTransferred: UInt64(reader.offset),
            configuration: MachineConfigurationSummary(machineType: sourceMachine), usedExtensions: extensionsActive,
            returnPathOpened: rp.isOpen, resumeTime: resumeTime, multifdChannels: channels.count,
            handlers: entries.indices.map {
                let m = extra[$0]
                return HandlerStatistics(
                    identity: entries[$0].identity, bytes: bytes[$0] + (m?.bytes ?? 0), sections: sections[$0],
                    loadTime: loadTime[$0] + (m?.loadTime ?? .zero), bytesLoaded: bytes[$0] + (m?.bytes ?? 0),
                    ackState: acks.ackState(HandlerKey(entries[$0].identity)))
            })
    }
}
