// Over 400 lines on purpose: the switchover decision is one pure state machine whose events,
// actions and the rules that join them are read together (the table-driven tests in
// SwitchoverStateMachineTests follow it top to bottom); splitting it would scatter one rule set.

import MigrationStream

/// The source's switchover decision: when to stop the guest, as a pure state machine.
///
/// Events go in — the clock (``clockTick(now:bytesWritten:)``), the handlers' pending
/// figures (``pendingEstimated(_:)``, ``pendingExact(_:)``), what the destination said on the
/// return path (``acknowledgementChanged(_:)``, ``loadReported(_:handler:)``,
/// ``backlogReported(_:handler:at:)``), the end of an iteration pass
/// (``passCompleted(now:bytesWritten:moved:anyMore:)``) — and actions come out. It does no
/// I/O, reads no clock and starts no thread: `SourceRun.iterate()` performs the actions (asks
/// the handlers, writes sections, sleeps, throws), and tests drive it on virtual time.
///
/// ```
///            clockTick ─▶ bandwidth sample at each 100 ms window ─▶ threshold = bandwidth × limit
///  pendingEstimated ─▶ queryExact (total < threshold) ─▶ pendingExact
///            decide ─▶ switchOver ─ pending ≤ threshold, prediction ≤ limit (extensions),
///                    │              acknowledged (switchover-ack)
///                    ├▶ iterate(notice?) ─ waiting: for data, the acknowledgement, the
///                    │                     destination's backlog; convergence judged here
///                    └▶ fail ─ acknowledgement timeout, not converging (when asked to abort)
///     passCompleted ─▶ next │ sleep(until:) (window budget spent, or nothing to send) │ fail (stall)
/// ```
///
/// The rules: QEMU's (`migration_iteration_run`, `migration_update_counters`), plus, with
/// Switchover's extensions, the prediction: pending / bandwidth, plus the time until the
/// destination has loaded what it holds, plus the final data's load time on the longest path
/// (multifd devices in parallel). Every figure from the destination meets saturating
/// arithmetic: a hostile one makes a prediction long, never a trap.
struct SwitchoverStateMachine: Sendable {
    /// What the decision depends on that does not change during a migration.
    struct Configuration: Sendable, Hashable {
        var downtimeLimit: Duration
        /// Bytes per second to assume instead of measuring (``MigrationParameters/switchoverBandwidth``).
        var switchoverBandwidth: UInt64?
        /// Bytes a 100 ms window may carry (``MigrationParameters/maxBandwidth`` / 10); nil = no cap.
        var windowBudget: Int?
        var switchoverAck: Bool
        /// The destination speaks Switchover's extensions (LOAD_REPORT, LOAD_BACKLOG, ACK_STATE).
        var extensions: Bool
        var countDestinationLoadTime: Bool
        var stallTimeout: Duration?
        var switchoverTimeout: Duration?
        var convergenceWindow: Duration?
        var abortWhenNotConverging: Bool
        /// Per handler: its final data goes over the multifd channels.
        var multifd: [Bool]

        init(parameters p: MigrationParameters, extensions: Bool, multifd: [Bool]) {
            downtimeLimit = p.downtimeLimit
            switchoverBandwidth = p.switchoverBandwidth
            windowBudget = p.maxBandwidth.map { Int(clamping: $0 / 10) }
            switchoverAck = p.switchoverAck
            self.extensions = extensions
            countDestinationLoadTime = p.countDestinationLoadTime
            stallTimeout = p.stallTimeout
            switchoverTimeout = p.switchoverTimeout
            convergenceWindow = p.convergenceWindow
            abortWhenNotConverging = p.abortWhenNotConverging
            self.multifd = multifd
        }
    }

    /// Why the live phase must end in failure; the driver adds phase and offset.
    enum Failure: Sendable, Hashable {
        /// No data moved for the stall timeout while nothing was awaited.
        case stall(String)
        /// The acknowledgement did not come within the switchover timeout.
        case acknowledgementTimeout(String)
        /// Not converging, and ``MigrationParameters/abortWhenNotConverging`` is set.
        case notConverging(String)
    }

    /// A change in the convergence verdict, to log and report.
    enum Notice: Sendable, Hashable {
        case convergingAgain(String)
        case notConverging(String)
    }

    enum TickAction: Sendable, Hashable {
        case none
        /// A 100 ms window closed: bandwidth and threshold are new (report progress).
        case windowClosed
    }

    enum PendingAction: Sendable, Hashable {
        /// The estimate is under the threshold: ask every handler for its exact figure.
        case queryExact
        /// Decide on the estimate.
        case decide
    }

    enum DecideAction: Sendable, Hashable {
        /// Stop the guest and complete.
        case switchOver(SwitchoverDecision)
        /// Run another pass; report the notice if there is one.
        case iterate(Notice?)
        case fail(Failure)
    }

    enum PassAction: Sendable, Hashable {
        /// Start the next pass at once.
        case next
        /// Sleep until `until`; `rateLimited`: the window's budget is spent (else nothing
        /// more to send: the sleep is idle time, to report with ``idle(_:)``).
        case sleep(until: Duration, rateLimited: Bool)
        case fail(Failure)
    }

    /// The least a window must move for its rate to count as a measurement of the link.
    static let minimumMeasuredWindow = 64 << 10

    let configuration: Configuration

    // The 100 ms window and the bandwidth.
    private(set) var windowStart: Duration
    private(set) var windowStartBytes: Int
    private var idleInWindow: Duration = .zero
    private var measuredBandwidthPerMs: Double = 0
    private var bandwidthMeasured = false
    /// The rates of the last measured windows, newest last (at most ``recentWindows``).
    private var recentRates: [Double] = []
    /// How many measured windows the bandwidth figure looks back over.
    static let recentWindows = 5
    /// bandwidth × downtime limit, in bytes.
    private(set) var threshold: UInt64 = 0

    // What the handlers and the destination said.
    private(set) var pending: [UInt64]
    private(set) var pendingIsExact = false
    private(set) var acknowledged = false
    private var loadReports: [LoadReport?]
    private var backlogs: [Backlog?]
    /// The main-stream offset through which the destination has loaded everything (its
    /// LOAD_BACKLOG reports); nil when it does not report one.
    private(set) var destinationLoadedThrough: UInt64?
    /// The bytes written when the previous decision was taken.
    private var writtenAtLastDecision: UInt64

    private struct Backlog: Sendable, Hashable {
        var expectedMicros: UInt64
        var at: Duration
    }

    // The decision's own state.
    private var lastMovement: Duration
    private var lowestPending = UInt64.max
    private var lowestPendingAt: Duration
    private var lowestPendingIsExact = false
    private var lowestBacklog: Duration?
    private var lastLoadedThrough: UInt64 = 0
    private(set) var converging = true
    private var ackWaitStart: Duration?
    /// Waiting for the acknowledgement or the destination's backlog (no stall then).
    private var waiting = false
    /// QEMU's prediction and ours, from the last ``decide(now:guestRunning:)``.
    private(set) var predictionQEMU: Duration?
    private(set) var prediction: DowntimePrediction?
    private(set) var decision: SwitchoverDecision?

    /// Iteration starts at `now` with `bytesWritten` on the main stream.
    init(configuration: Configuration, now: Duration, bytesWritten: Int) {
        self.configuration = configuration
        let n = configuration.multifd.count
        windowStart = now
        windowStartBytes = bytesWritten
        lastMovement = now
        lowestPendingAt = now
        writtenAtLastDecision = UInt64(max(0, bytesWritten))
        pending = Array(repeating: 0, count: n)
        loadReports = Array(repeating: nil, count: n)
        backlogs = Array(repeating: nil, count: n)
        updateThreshold()
    }

    // MARK: Bandwidth

    /// Bytes per millisecond the decision assumes: the fixed switchover bandwidth, or the measured one.
    var bandwidthPerMs: Double {
        configuration.switchoverBandwidth.map { Double($0) / 1000 } ?? measuredBandwidthPerMs
    }

    /// QEMU `migration_update_counters`: a window of at least 100 ms closes, its rate (not
    /// counting idle time) is a bandwidth sample.
    mutating func clockTick(now: Duration, bytesWritten: Int) -> TickAction {
        let elapsed = now - windowStart
        guard elapsed >= MigrationParameters.rateLimitWindow else { return .none }
        let busy = elapsed - idleInWindow
        let transferred = bytesWritten - windowStartBytes
        // Bytes moved in under 1 ms of work count as moved in 1 ms (a lower bound on the rate).
        if transferred > 0 { bandwidthSample(bytes: transferred, busy: max(busy, .milliseconds(1))) }
        windowStart = now
        windowStartBytes = bytesWritten
        idleInWindow = .zero
        updateThreshold()
        return .windowClosed
    }

    /// `bytes` moved in `busy` time. A window that moved little says how little the handlers
    /// had to send, not what the link carries: once a window has moved enough to measure, only
    /// such windows count. Before that the best rate seen stands in, so a tiny device state
    /// (mtty: 96 bytes) can still switch over. The figure is the highest rate of the last
    /// ``recentWindows`` measured windows: a window in which the destination was busy loading
    /// (our writes blocked) measures the destination, not the link — and the destination's
    /// backlog is counted apart.
    mutating func bandwidthSample(bytes: Int, busy: Duration) {
        let rate = Double(bytes) / busy.milliseconds
        if bytes >= Self.minimumMeasuredWindow {
            recentRates.append(rate)
            if recentRates.count > Self.recentWindows { recentRates.removeFirst(recentRates.count - Self.recentWindows) }
            measuredBandwidthPerMs = recentRates.max() ?? rate
            bandwidthMeasured = true
        } else if !bandwidthMeasured {
            measuredBandwidthPerMs = max(measuredBandwidthPerMs, rate)
        }
        updateThreshold()
    }

    /// The driver slept `duration` with nothing to send: not part of the bandwidth measurement.
    mutating func idle(_ duration: Duration) {
        idleInWindow += max(.zero, duration)
    }

    /// Whether the current window's budget is spent (stop the pass).
    func budgetSpent(bytesWritten: Int) -> Bool {
        guard let budget = configuration.windowBudget else { return false }
        return bytesWritten - windowStartBytes >= budget
    }

    private mutating func updateThreshold() {
        threshold = UInt64(clamping: bandwidthPerMs * configuration.downtimeLimit.milliseconds)
    }

    // MARK: Pending figures and the destination's messages

    /// The handlers' cheap estimates, in registry order. The exact figures are asked for
    /// whenever the estimates alone would allow the switchover (at or under the threshold, where
    /// QEMU asks only under it): an estimate leaves out what only the exact figure counts (a VFIO
    /// device's stop-copy size), and a switchover on an estimate of nothing, before any bandwidth
    /// was measured, would move all of that in the downtime.
    mutating func pendingEstimated(_ figures: [UInt64]) -> PendingAction {
        pending = figures
        pendingIsExact = false
        return figures.saturatingSum <= threshold ? .queryExact : .decide
    }

    /// The handlers' exact figures (after ``PendingAction/queryExact``).
    mutating func pendingExact(_ figures: [UInt64]) {
        pending = figures
        pendingIsExact = true
    }

    /// The switchover acknowledgement as the return path knows it (given, or withdrawn).
    mutating func acknowledgementChanged(_ acknowledged: Bool) {
        self.acknowledged = acknowledged
    }

    /// LOAD_REPORT for handler number `handler`.
    mutating func loadReported(_ report: LoadReport, handler: Int) {
        guard loadReports.indices.contains(handler) else { return }
        loadReports[handler] = report
    }

    /// LOAD_BACKLOG for handler number `handler`, received at `at`.
    mutating func backlogReported(_ report: LoadBacklogReport, handler: Int, at: Duration) {
        guard backlogs.indices.contains(handler) else { return }
        backlogs[handler] = Backlog(expectedMicros: report.expectedMicros, at: at)
        destinationLoadedThrough = max(destinationLoadedThrough ?? 0, report.loadedThrough)
    }

    /// The time until the destination is idle, as of `now`: the sum of its handlers' reported
    /// backlogs (it loads the main stream on one thread), less the time since the newest report.
    func destinationBacklog(now: Duration) -> Duration {
        var micros: UInt64 = 0
        var newest: Duration?
        for case let b? in backlogs {
            micros = [micros, b.expectedMicros].saturatingSum
            newest = max(newest ?? b.at, b.at)
        }
        guard let newest, micros > 0 else { return .zero }
        let total = Duration.fromMicroseconds(Double(micros))
        let age = max(.zero, now - newest)
        return total > age ? total - age : .zero
    }

    private var hasDestinationFigures: Bool {
        loadReports.contains { $0 != nil } || backlogs.contains { $0 != nil }
    }

    // MARK: The decision

    /// QEMU's prediction (pending / bandwidth; nil without a bandwidth figure while data is
    /// pending) and ours, with its parts.
    static func predict(
        pending: [UInt64], multifd: [Bool], reports: [LoadReport?], backlog: Duration,
        bandwidthPerMs: Double
    ) -> (qemu: Duration?, ours: DowntimePrediction?) {
        let total = pending.saturatingSum
        // Nothing pending needs no bandwidth figure: the switchover can come before the first
        // measurement (a multifd migration whose devices' data all waits for the channels).
        guard bandwidthPerMs > 0 || total == 0 else { return (nil, nil) }
        func transfer(_ bytes: UInt64) -> Duration { bytes == 0 ? .zero : .fromMilliseconds(Double(bytes) / bandwidthPerMs) }
        let qemu = transfer(total)
        // Every byte crosses the one link first; each device's final load waits for its last
        // byte. The main channel's devices load one after the other on the load thread; each
        // multifd device loads on a thread of its own, in parallel with the rest.
        var mainLoadMicros: Double = 0
        var longestMultifdMicros: Double = 0
        for i in pending.indices {
            let isMultifd = multifd.indices.contains(i) && multifd[i]
            // The rate of what was loaded after the initial data, not the average: a one-off
            // cost of the initial data would otherwise be charged to every final byte. Every
            // figure here is the peer's: the sums are Doubles (inf at worst), their conversion
            // clamps, never traps.
            let report = reports.indices.contains(i) ? reports[i] : nil
            let load = report.map { $0.microsPerByte * Double(pending[i]) + Double($0.fixedCostMicros) } ?? 0
            if isMultifd {
                longestMultifdMicros = max(longestMultifdMicros, load)
            } else {
                mainLoadMicros += load
            }
        }
        let critical = Duration.fromMicroseconds(max(mainLoadMicros, longestMultifdMicros))
        return (qemu, DowntimePrediction(transfer: qemu, destinationBacklog: backlog, finalLoad: critical))
    }

    /// Decides on the figures given so far, at `now`, with `bytesWritten` on the main stream.
    /// `guestRunning` false (the VMM stopped it) needs no acknowledgement, as in QEMU.
    ///
    /// A destination that reports its backlog says how far it has loaded the stream: its
    /// backlog is known only for what it has seen, so the source also waits until it has loaded
    /// everything written up to the previous decision (what came since is one pass: small).
    mutating func decide(now: Duration, guestRunning: Bool, bytesWritten: Int = 0) -> DecideAction {
        let c = configuration
        let total = pending.saturatingSum
        let backlog = destinationBacklog(now: now)
        let written = UInt64(max(0, bytesWritten))
        defer { writtenAtLastDecision = max(writtenAtLastDecision, written) }
        let behind = c.extensions && c.countDestinationLoadTime && (destinationLoadedThrough.map { $0 < writtenAtLastDecision } ?? false)
        (predictionQEMU, prediction) = Self.predict(
            pending: pending, multifd: c.multifd, reports: loadReports, backlog: backlog,
            bandwidthPerMs: bandwidthPerMs)
        let ackOK = !c.switchoverAck || !guestRunning || acknowledged
        let usesLoadTime = c.countDestinationLoadTime && c.extensions && hasDestinationFigures
        let fitsThreshold = total <= threshold
        let heldByPrediction = fitsThreshold && ((usesLoadTime && (prediction.map { $0.total > c.downtimeLimit } ?? true)) || behind)
        let small = fitsThreshold && !heldByPrediction

        if small && ackOK {
            let d = SwitchoverDecision(
                pendingBytes: total, thresholdBytes: threshold, bandwidth: bandwidthPerMs * 1000,
                predictedDowntimeQEMU: predictionQEMU, predictedDowntime: prediction?.total,
                countedDestinationLoadTime: usesLoadTime, prediction: prediction)
            decision = d
            return .switchOver(d)
        }
        let waitingForAck = small && !ackOK
        // The destination still loads what it has: the source waits for it, as for an ack.
        let waitingForDestination = heldByPrediction && (backlog > .zero || behind)
        waiting = waitingForAck || waitingForDestination
        if waitingForAck {
            let since = ackWaitStart ?? now
            ackWaitStart = since
            if let limit = c.switchoverTimeout, now - since >= limit {
                return .fail(
                    .acknowledgementTimeout(
                        "the destination did not acknowledge the switchover within \(limit) of the data allowing it"))
            }
        }
        if waiting { lastMovement = now }
        var backlogShrank = false
        if waitingForDestination {
            // Progress while the backlog reaches new lows; a backlog that grows is none.
            if lowestBacklog.map({ backlog < $0 - $0 / 100 }) ?? true { backlogShrank = true }
            if behind, let through = destinationLoadedThrough, through > lastLoadedThrough { backlogShrank = true }
            lastLoadedThrough = destinationLoadedThrough ?? 0
            lowestBacklog = min(lowestBacklog ?? backlog, backlog)
        } else if backlog == .zero {
            lowestBacklog = nil
        }
        let notice = judgeConvergence(total: total, now: now, progress: waitingForAck || backlogShrank, backlog: backlog)
        if case .notConverging(let why) = notice, c.abortWhenNotConverging { return .fail(.notConverging(why)) }
        return .iterate(notice)
    }

    /// A new low is 1 % under the lowest pending figure seen; none for the convergence window
    /// (not counting a wait for the acknowledgement, or a destination backlog that shrinks)
    /// means the migration is not converging.
    private mutating func judgeConvergence(total: UInt64, now: Duration, progress: Bool, backlog: Duration) -> Notice? {
        // The estimate and the exact figure measure different things (mlx5's estimate leaves
        // out the stop-copy size): when the kind changes, the low starts again from here,
        // and the clock goes on.
        if pendingIsExact != lowestPendingIsExact {
            lowestPendingIsExact = pendingIsExact
            lowestPending = total
        }
        if progress || total < lowestPending - lowestPending / 100 {
            lowestPending = min(lowestPending, total)
            lowestPendingAt = now
            guard !converging else { return nil }
            converging = true
            return .convergingAgain("converging again: \(total) bytes pending")
        }
        guard converging, let window = configuration.convergenceWindow, now - lowestPendingAt >= window else { return nil }
        converging = false
        var why = "\(total) bytes pending have not gone 1 % below the lowest figure, \(lowestPending), for \(window)"
        if total <= threshold, let ours = prediction {
            why +=
                "; they fit the threshold of \(threshold) bytes, but the predicted downtime with the destination's load time, "
                + "\(ours.total) (backlog \(backlog), transfer \(ours.transfer), final load \(ours.finalLoad)), exceeds the limit of \(configuration.downtimeLimit)"
        } else {
            why +=
                "; the threshold is \(threshold) bytes (bandwidth × downtime limit): what remains cannot move within the limit "
                + "(state that leaves only once the guest stops, or data dirtied as fast as it is sent)"
        }
        return .notConverging(why)
    }

    /// A pass ended at `now`: `moved` data (more than end markers, or multifd pre-copy bytes),
    /// `anyMore` a handler said it has more right now.
    mutating func passCompleted(now: Duration, bytesWritten: Int, moved: Bool, anyMore: Bool) -> PassAction {
        if moved || anyMore { lastMovement = now }
        if !waiting, let stall = configuration.stallTimeout, now - lastMovement >= stall {
            return .fail(
                .stall("no data moved for \(stall) with \(pending.saturatingSum) bytes pending above the threshold of \(threshold)"))
        }
        let windowEnd = windowStart + MigrationParameters.rateLimitWindow
        if budgetSpent(bytesWritten: bytesWritten) { return .sleep(until: windowEnd, rateLimited: true) }
        // Every handler has sent what it has: wait a little instead of spinning.
        if !anyMore { return .sleep(until: min(windowEnd, now + .milliseconds(5)), rateLimited: false) }
        return .next
    }
}
