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
    /// Stops the guest at the switchover, resumes it on failure.
    public let vm: any VMController
    /// Written after the file header.
    public let configuration: MachineConfiguration
    public let parameters: MigrationParameters
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
    ///   - clock: the engine's time source (a virtual one in tests).
    ///   - logger: defaults to a silent logger labelled "switchover.migration".
    public init(registry: HandlerRegistry, vm: any VMController, configuration: MachineConfiguration,
                parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock(),
                logger: Logger? = nil) {
        self.registry = registry
        self.vm = vm
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
    public func run(over connection: any MigrationConnection, multifdChannels: [any MigrationConnection]) async throws -> MigrationStatistics {
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
    private var pending: [UInt64]

    // Iteration and the 100 ms window.
    private var iterations = 0
    private var rateLimitWaits = 0
    private var exactQueries = 0
    private var windowStart: Duration = .zero
    private var windowStartBytes = 0
    private var idleInWindow: Duration = .zero
    private var bandwidthPerMs: Double = 0
    private var bandwidthMeasured = false
    /// The least a window must move for its rate to count as a measurement of the link.
    static let minimumMeasuredWindow = 64 << 10
    private var threshold: UInt64 = 0
    private var lastMovement: Duration = .zero
    /// Convergence: the lowest pending figure seen, when it was reached, and the verdict.
    private var lowestPending = UInt64.max
    private var lowestPendingAt: Duration = .zero
    private var lowestPendingIsExact = false
    private var converging = true
    private var ackWaitStart: Duration?
    private var decision: SwitchoverDecision?
    private var lastPrediction: (qemu: Duration?, ours: Duration?) = (nil, nil)
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
        self.precopyOverChannels = owner.parameters.multifdPrecopy
            ? Set(entries.indices.filter { plan.enabled[$0] && entries[$0].handler is any MultifdPrecopyHandler }) : []
        self.contexts = entries.indices.map {
            EngineSaveContext(identity: entries[$0].identity, switchoverAckEnabled: owner.parameters.switchoverAck,
                              multifdTransfer: plan.enabled[$0], running: running)
        }
        self.returnPathOn = owner.parameters.returnPath && connection.supportsReturnPath
        self.extensionsOn = owner.parameters.extensions && owner.parameters.returnPath && connection.supportsReturnPath
        self.startTime = owner.clock.now
        self.bytes = Array(repeating: 0, count: entries.count)
        self.sections = Array(repeating: 0, count: entries.count)
        self.pending = Array(repeating: 0, count: entries.count)
        owner.control.attach(connection)
    }

    // MARK: Driver

    func run() throws -> MigrationStatistics {
        defer { owner.progressContinuation.finish() }
        do {
            try validate()
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
                throw MigrationError.invalidParameters("multifd channels need a transport that can open more connections (tcp:, unix:), not \(t)")
            }
        case .given(let list):
            guard list.count == params.multifdChannels else {
                throw MigrationError.invalidParameters("\(list.count) multifd channel connections given, multifdChannels is \(params.multifdChannels)")
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
                connections = try MultifdChannels.open(count: count, uuid: multifdUUID(owner.configuration), writeTimeout: params.stallTimeout) {
                    if owner.control.isCancelled { throw TransportError.shutDown }
                    return try t.connect()
                }
            case .given(let list):
                var iterator = list.makeIterator()
                connections = try MultifdChannels.open(count: count, uuid: multifdUUID(owner.configuration), writeTimeout: params.stallTimeout) {
                    guard let next = iterator.next() else { throw MultifdError.channelSetup("too few channel connections") }
                    return next
                }
            }
        } catch {
            if case .given(let list) = channelSource { for c in list { c.close() } }
            throw MigrationError.setup(MigrationFailure(phase: phase, message: "could not open the multifd channels", underlying: error))
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
                throw MigrationError.destinationFailed(MigrationFailure(phase: phase, offset: writer.bytesWritten,
                    message: "the destination reported failure (SHUT \(shut))"))
            }
            if shut != nil && phase != .finishing {
                throw MigrationError.returnPath(MigrationFailure(phase: phase, message: "the destination ended the migration early (SHUT 0)"))
            }
            if let failure {
                let closed = (failure as? StreamError).map { if case .truncated = $0 { true } else { false } } ?? false
                throw MigrationError.returnPath(MigrationFailure(phase: phase,
                    message: closed ? "the destination closed the connection without a verdict" : "the return path failed",
                    underlying: failure))
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
                throw MigrationError.setup(MigrationFailure(phase: phase, handler: e.identity, message: "savePrepare refused the migration", underlying: error))
            }
        }
        try writer.writeFileHeader()
        try writer.writeConfiguration(owner.configuration)
        if returnPathOn {
            let rp = SourceReturnPath(extensions: extensionsOn, known: Set(entries.map { HandlerKey($0.identity) }), logger: logger)
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
        try writer.writeCommand(.switchoverHello(version: 1, features: 0))
        let inventory = PreflightInventory(machineType: owner.configuration.machineType, handlers: entries.filter { $0.handler.isActive }.map {
            .init(idstr: $0.identity.idstr, instanceID: $0.identity.instanceID, versionID: $0.identity.versionID,
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
            throw MigrationError.preflight(MigrationFailure(phase: phase, message: "the destination refused the migration: \(answer.message)"))
        }
        try checkAbort()
        guard let answer else {
            throw MigrationError.timeout(.stall, MigrationFailure(phase: phase,
                message: "no pre-flight answer from the destination within \(params.stallTimeout.map { "\($0)" } ?? "-")"))
        }
        guard answer != nil else {
            throw MigrationError.returnPath(MigrationFailure(phase: phase, message: "the return path closed before the pre-flight answer",
                                                             underlying: ReturnPathError.closed))
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
            throw classify(error, phase: phase, cancelled: owner.control.isCancelled, offset: writer.bytesWritten,
                           message: "writing the stream failed")
        }
    }

    /// Writes one section (header, body from `body`, footer) for entry `i`, counting its bytes.
    @discardableResult
    private func writeSection<R>(_ kind: SectionKind, _ i: Int,
                                 _ body: (any MigrationHandler, StreamWriter, SaveContext) throws -> R) throws -> R {
        let e = entries[i]
        let header = SectionHeader(kind: kind, sectionID: e.sectionID, idstr: e.identity.idstr,
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
            throw classify(error, phase: phase, cancelled: owner.control.isCancelled, handler: e.identity, section: header,
                           offset: start, message: "\(kind) section of \(e.identity) failed")
        }
    }

    // MARK: Iteration and the switchover decision

    private var liveIndices: [Int] {
        entries.indices.filter { entries[$0].handler.isActive && entries[$0].handler.isLive }
    }

    private func iterate() throws {
        enter(.iterating)
        windowStart = clock.now
        windowStartBytes = writer.bytesWritten
        lastMovement = windowStart
        lowestPendingAt = windowStart
        updateThreshold()
        let live = liveIndices.filter { !precopyOverChannels.contains($0) }
        if let multifd, !precopyOverChannels.isEmpty {
            multifd.startPrecopy(precopyOverChannels.sorted().compactMap { i in
                (entries[i].handler as? any MultifdPrecopyHandler).map { (i, entries[i].identity, $0, contexts[i] as SaveContext) }
            }, windowBudget: params.maxBandwidth.map { Int($0 / 10) }, clock: clock)
        }
        var multifdSent = multifd?.bytesSentSoFar ?? 0
        while true {
            try checkAbort()
            if let (identity, error) = multifd?.precopyFailure {
                throw MigrationError.iterate(MigrationFailure(phase: phase, handler: identity,
                    message: "the pre-copy over the multifd channels failed", underlying: multifd?.sender.failure ?? error))
            }
            let now = clock.now
            updateCounters(now)

            // Pending: the cheap estimate, the exact figure only under the threshold.
            for i in entries.indices { pending[i] = 0 }
            for i in entries.indices where entries[i].handler.isActive {
                pending[i] = entries[i].handler.pendingEstimate(context: contexts[i]).total
            }
            var total = pending.saturatingSum
            let tookExact = total < threshold
            if tookExact {
                exactQueries += 1
                for i in entries.indices where entries[i].handler.isActive {
                    do {
                        pending[i] = try entries[i].handler.pendingExact(context: contexts[i]).total
                    } catch {
                        throw MigrationError.iterate(MigrationFailure(phase: phase, handler: entries[i].identity,
                            message: "pendingExact failed", underlying: error))
                    }
                }
                total = pending.saturatingSum
            }
            lastPrediction = predict()
            emitProgressIfAckChanged()
            let ackOK = !params.switchoverAck || !vmRunning.get || (rp?.acknowledged ?? false)
            let usesLoadTime = params.countDestinationLoadTime && extensionsOn && hasLoadReports
            var small = total <= threshold
            if small, usesLoadTime, let ours = lastPrediction.ours, ours > params.downtimeLimit { small = false }

            if small && ackOK {
                decision = SwitchoverDecision(pendingBytes: total, thresholdBytes: threshold, bandwidth: expectedBandwidthPerMs * 1000,
                                              predictedDowntimeQEMU: lastPrediction.qemu, predictedDowntime: lastPrediction.ours,
                                              countedDestinationLoadTime: usesLoadTime)
                logger.debug("switchover: pending \(total) ≤ threshold \(threshold)")
                return
            }
            let waitingForAck = small && !ackOK
            if waitingForAck {
                let since = ackWaitStart ?? now
                ackWaitStart = since
                lastMovement = now
                if let limit = params.switchoverTimeout, now - since >= limit {
                    throw MigrationError.timeout(.switchoverAck, MigrationFailure(phase: phase,
                        message: "the destination did not acknowledge the switchover within \(limit) of the data allowing it"))
                }
            }
            try judgeConvergence(total: total, now: now, waitingForAck: waitingForAck, exact: tookExact)

            // One pass: a PART section per eligible handler until the window's budget is spent.
            let budget = params.maxBandwidth.map { Int($0 / 10) }
            var anyMore = false
            var moved = false
            for i in live where entries[i].handler.isActiveIterate(context: contexts[i]) {
                if let budget, writer.bytesWritten - windowStartBytes >= budget { break }
                let before = writer.bytesWritten
                let result = try writeSection(.part, i) { h, w, c in try h.saveIterate(to: w, context: c) }
                if result == .more { anyMore = true }
                // More than an end marker (16 bytes) besides header (5) and footer (5) is movement.
                if writer.bytesWritten - before > 26 { moved = true }
            }
            emitProgressIfAckChanged()
            try flush()
            iterations += 1
            if let sent = multifd?.bytesSentSoFar, sent != multifdSent { multifdSent = sent; moved = true }
            if moved || anyMore { lastMovement = clock.now }
            if !waitingForAck, let stall = params.stallTimeout, clock.now - lastMovement >= stall {
                throw MigrationError.timeout(.stall, MigrationFailure(phase: phase, offset: writer.bytesWritten,
                    message: "no data moved for \(stall) with \(total) bytes pending above the threshold of \(threshold)"))
            }

            if let budget, writer.bytesWritten - windowStartBytes >= budget {
                rateLimitWaits += 1
                clock.sleep(until: windowStart + MigrationParameters.rateLimitWindow)
            } else if !anyMore {
                // Every handler has sent what it has: wait a little instead of spinning. The
                // idle time does not count in the bandwidth measurement.
                let t0 = clock.now
                clock.sleep(until: min(windowStart + MigrationParameters.rateLimitWindow, t0 + .milliseconds(5)))
                idleInWindow += clock.now - t0
            }
        }
    }

    /// A new low is 1 % under the lowest pending figure seen; none for `convergenceWindow`
    /// (not counting a wait for the acknowledgement) means the migration is not converging.
    private func judgeConvergence(total: UInt64, now: Duration, waitingForAck: Bool, exact: Bool) throws {
        // The estimate and the exact figure measure different things (mlx5's estimate leaves
        // out the stop-copy size): when the kind changes, the low starts again from here,
        // and the clock goes on.
        if exact != lowestPendingIsExact {
            lowestPendingIsExact = exact
            lowestPending = total
        }
        if waitingForAck || total < lowestPending - lowestPending / 100 {
            lowestPending = min(lowestPending, total)
            lowestPendingAt = now
            if !converging {
                converging = true
                logger.info("converging again: \(total) bytes pending")
                emitProgress()
            }
            return
        }
        guard converging, let window = params.convergenceWindow, now - lowestPendingAt >= window else { return }
        converging = false
        var why = "\(total) bytes pending have not gone 1 % below the lowest figure, \(lowestPending), for \(window)"
        if total <= threshold, let ours = lastPrediction.ours {
            why += "; they fit the threshold of \(threshold) bytes, but the predicted downtime with the destination's load time, \(ours), exceeds the limit of \(params.downtimeLimit)"
        } else {
            why += "; the threshold is \(threshold) bytes (bandwidth × downtime limit): what remains cannot move within the limit "
                + "(state that leaves only once the guest stops, or data dirtied as fast as it is sent)"
        }
        logger.warning("not converging: \(why)")
        emitProgress()
        if params.abortWhenNotConverging {
            throw MigrationError.notConverging(MigrationFailure(phase: phase, offset: writer.bytesWritten, message: why))
        }
    }

    private var expectedBandwidthPerMs: Double {
        if let bw = params.switchoverBandwidth { return Double(bw) / 1000 }
        return bandwidthPerMs
    }

    private func updateThreshold() {
        threshold = UInt64(clamping: expectedBandwidthPerMs * params.downtimeLimit.milliseconds)
    }

    /// QEMU `migration_update_counters`: once per ≥ 100 ms window.
    private func updateCounters(_ now: Duration) {
        let elapsed = now - windowStart
        guard elapsed >= MigrationParameters.rateLimitWindow else { return }
        let busy = elapsed - idleInWindow
        let transferred = writer.bytesWritten - windowStartBytes
        if busy >= .milliseconds(1) && transferred > 0 {
            // A window that moved little says how little the handlers had to send, not what
            // the link carries: once a window has moved enough to measure, only such windows
            // update the estimate. Before that, the best rate seen stands in, so a tiny device
            // state (mtty: 96 bytes) can still switch over.
            let rate = Double(transferred) / busy.milliseconds
            if transferred >= Self.minimumMeasuredWindow {
                bandwidthPerMs = rate
                bandwidthMeasured = true
            } else if !bandwidthMeasured {
                bandwidthPerMs = max(bandwidthPerMs, rate)
            }
        }
        windowStart = now
        windowStartBytes = writer.bytesWritten
        idleInWindow = .zero
        updateThreshold()
        emitProgress()
    }

    private var hasLoadReports: Bool { rp?.state.withLock { !$0.loadReports.isEmpty } ?? false }

    /// QEMU's prediction (pending / bandwidth) and ours (plus the destination's load time).
    private func predict() -> (qemu: Duration?, ours: Duration?) {
        let bw = expectedBandwidthPerMs
        let total = pending.saturatingSum
        // Nothing pending needs no bandwidth figure: the switchover can come before the first
        // measurement (a multifd migration whose devices' data all waits for the channels).
        guard bw > 0 || total == 0 else { return (nil, nil) }
        let qemu = total == 0 ? .zero : Duration.fromMilliseconds(Double(total) / bw)
        var loadMicros: Double = 0
        if let reports = rp?.state.withLock({ $0.loadReports }) {
            for (i, e) in entries.enumerated() {
                guard let r = reports[HandlerKey(e.identity)] else { continue }
                // The rate of what was loaded after the initial data, not the average: a
                // one-off cost of the initial data would otherwise be charged to every final byte.
                // Every figure here is the peer's: the sum is a Double (inf at worst) and its
                // conversion is clamped, never a trap.
                loadMicros += r.microsPerByte * Double(pending[i]) + Double(r.fixedCostMicros)
            }
        }
        return (qemu, Duration.predictionSum(qemu, .fromMicroseconds(loadMicros)))
    }

    // MARK: Completion

    private func complete() throws {
        multifd?.stopPrecopy()
        enter(.completing)
        downtimeStart = clock.now
        if owner.vm.isRunning {
            do {
                try owner.vm.stopVM()
            } catch {
                throw MigrationError.complete(MigrationFailure(phase: phase, message: "the VMM could not stop the guest", underlying: error))
            }
            weStoppedVM = true
        }
        vmRunning.set(false)
        // Multifd: each device's stop-copy data leaves on its own thread while the main
        // channel carries SWITCHOVER_START (always, then) and the END pass, whose bodies are
        // the handlers' dummies (docs/multifd.md).
        if let multifd {
            multifd.startSaves(entries.indices.filter { multifdPlan.enabled[$0] }.map {
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
                throw MigrationError.complete(MigrationFailure(phase: phase, handler: multifd.failedDevice, offset: writer.bytesWritten,
                    message: "the multifd transfer failed", underlying: error))
            }
        }
        var described: [(identity: HandlerIdentity, size: Int)] = []
        for i in entries.indices where entries[i].handler.isActive && entries[i].handler.hasFullState {
            let before = writer.bytesWritten
            let header = SectionHeader(kind: .full, sectionID: 0, idstr: entries[i].identity.idstr, instanceID: 0, versionID: 0)
            try writeSection(.full, i) { h, w, c in try h.saveState(to: w, context: c) }
            described.append((entries[i].identity, writer.bytesWritten - before - header.encodedLength - 5))
        }
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
            throw MigrationError.timeout(.stall, MigrationFailure(phase: phase,
                message: "the destination did not report its result within \(params.stallTimeout.map { "\($0)" } ?? "-")"))
        }
        guard let shut = verdict else {
            let failure = rp.state.withLock { $0.failure }
            throw MigrationError.returnPath(MigrationFailure(phase: phase, message: "the return path closed before the destination's verdict",
                                                             underlying: failure ?? ReturnPathError.closed))
        }
        guard shut == 0 else {
            throw MigrationError.destinationFailed(MigrationFailure(phase: phase, offset: writer.bytesWritten,
                message: "the destination reported failure (SHUT \(shut))"))
        }
    }

    // MARK: Endings

    private func succeed() -> MigrationStatistics {
        let end = clock.now
        let downtime = weStoppedVM ? downtimeStart.map { end - $0 } : nil
        rp?.join(timeout: .seconds(5))
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
            if !cancelled, let channelFailure, let channel = channelFailure.channel, !(result.failure?.underlying is MultifdError) {
                result = .complete(MigrationFailure(phase: result.phase, offset: writer.bytesWritten,
                                                    message: "multifd channel \(channel) failed", underlying: channelFailure))
            }
        } else if case .given(let list) = channelSource {
            for c in list { c.shutdown(); c.close() }
        }
        if let rp {
            // A write that failed because the destination gave up and closed: prefer its verdict.
            if !cancelled, isConnectionLoss(result) {
                rp.join(timeout: .milliseconds(500))
                if let shut = rp.state.withLock({ $0.shut }), shut != 0 {
                    result = .destinationFailed(MigrationFailure(phase: result.phase, offset: writer.bytesWritten,
                        message: "the destination reported failure (SHUT \(shut))", underlying: result))
                }
            }
            rp.stop()
        }
        connection.shutdown()
        rp?.join(timeout: .seconds(5))
        logger.info("source failed: \(result)")
        for e in entries { e.handler.saveCleanup(succeeded: false) }
        if weStoppedVM {
            do {
                try owner.vm.resumeVM()
            } catch {
                logger.error("the guest could not be resumed after the failed migration: \(error)")
            }
        }
        vmRunning.set(owner.vm.isRunning)
        connection.close()
        enter(cancelled ? .cancelled : .failed)
        return result
    }

    private func isConnectionLoss(_ error: MigrationError) -> Bool {
        var underlying = error.failure?.underlying
        while let u = underlying {
            if let t = u as? TransportError {
                switch t {
                case .connectionClosed, .shutDown: return true
                default: return false
                }
            }
            if case .returnPath = u as? MigrationError { return true }
            if case .channelFailed(_, _, let cause) = u as? MultifdError { underlying = cause; continue }
            underlying = (u as? MigrationError)?.failure?.underlying
        }
        if case .returnPath = error { return true }
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
        let event = MigrationProgress(
            phase: phase, elapsed: clock.now - startTime, bytesTransferred: UInt64(writer.bytesWritten),
            iterations: iterations, pendingBytes: pending.saturatingSum, bandwidth: expectedBandwidthPerMs * 1000,
            thresholdBytes: threshold, predictedDowntimeQEMU: lastPrediction.qemu, predictedDowntime: lastPrediction.ours,
            switchoverAcknowledged: !params.switchoverAck || (rp?.acknowledged ?? false),
            handlers: entries.indices.map {
                HandlerProgress(identity: entries[$0].identity, bytes: bytes[$0], pending: pending[$0], ackState: handlerAckState($0))
            },
            converging: converging)
        owner.progressContinuation.yield(event)
    }

    private func statistics(total: Duration, downtime: Duration?) -> MigrationStatistics {
        let reports = rp?.state.withLock { $0.loadReports } ?? [:]
        let multifdBytes = multifd?.bytesPerEntry ?? [:]
        return MigrationStatistics(
            totalTime: total, setupTime: setupTime, downtime: downtime,
            downtimeEnd: rp == nil ? .eofWritten : .destinationShut, decision: decision,
            bytesTransferred: UInt64(writer.bytesWritten), iterations: iterations, rateLimitWaits: rateLimitWaits,
            exactQueries: exactQueries, usedExtensions: extensionsOn,
            multifdChannels: multifd?.sender.channelCount ?? 0, multifdBytes: multifd?.sender.bytesWritten ?? 0,
            handlers: entries.indices.map { i in
                let report = reports[HandlerKey(entries[i].identity)]
                return HandlerStatistics(identity: entries[i].identity, bytes: bytes[i] + (multifdBytes[i] ?? 0), sections: sections[i],
                                         loadTime: report.map { .microseconds(Int64($0.loadMicros)) },
                                         bytesLoaded: report?.bytesLoaded, ackState: handlerAckState(i))
            })
    }
}
