import MigrationStream
import Testing

@testable import MigrationCore

/// The switchover decision on its own: events in, actions out, on virtual time (plain
/// Durations; the state machine reads no clock).
@Suite struct SwitchoverStateMachineTests {
    typealias Machine = SwitchoverStateMachine

    /// 1 MB/s: 1000 bytes per ms, so the 300 ms default limit is a 300 000-byte threshold.
    static let rate = 1_000_000

    static func machine(
        handlers: Int = 2, multifd: [Bool]? = nil, extensions: Bool = true,
        _ adjust: (inout MigrationParameters) -> Void = { _ in }
    ) -> Machine {
        var p = MigrationParameters()
        adjust(&p)
        let config = Machine.Configuration(
            parameters: p, extensions: extensions, multifd: multifd ?? Array(repeating: false, count: handlers))
        return Machine(configuration: config, now: .zero, bytesWritten: 0)
    }

    /// A machine that has measured 1 MB/s in its first window (at t = 100 ms).
    static func measured(
        handlers: Int = 2, multifd: [Bool]? = nil, extensions: Bool = true,
        _ adjust: (inout MigrationParameters) -> Void = { _ in }
    ) -> Machine {
        var m = machine(handlers: handlers, multifd: multifd, extensions: extensions, adjust)
        #expect(m.clockTick(now: .milliseconds(100), bytesWritten: rate / 10) == .windowClosed)
        return m
    }

    static func report(_ i: Int, fixed: UInt64 = 0, rateBytes: UInt64 = 0, rateMicros: UInt64 = 0) -> LoadReport {
        LoadReport(
            idstr: "h\(i)", instanceID: 0, bytesLoaded: rateBytes, loadMicros: rateMicros, fixedCostMicros: fixed,
            rateBytes: rateBytes, rateMicros: rateMicros)
    }

    static func backlog(_ i: Int, ms: UInt64) -> LoadBacklogReport {
        LoadBacklogReport(idstr: "h\(i)", instanceID: 0, bytes: ms > 0 ? 1 << 20 : 0, expectedMicros: ms * 1000)
    }

    static func switched(_ action: Machine.DecideAction) -> SwitchoverDecision? {
        if case .switchOver(let d) = action { return d }
        return nil
    }

    // MARK: The threshold and the bandwidth

    /// One row: pending bytes (two handlers) → switch or not, at 1 MB/s and a 300 ms limit.
    struct ThresholdRow: Sendable, CustomTestStringConvertible {
        var pending: [UInt64]
        var switches: Bool
        var testDescription: String { "\(pending) → \(switches ? "switch" : "iterate")" }
    }

    @Test(arguments: [
        ThresholdRow(pending: [0, 0], switches: true),
        ThresholdRow(pending: [100_000, 200_000], switches: true),
        ThresholdRow(pending: [100_000, 200_001], switches: false),
        ThresholdRow(pending: [UInt64.max, 1], switches: false)
    ])
    func pendingAgainstTheThreshold(_ row: ThresholdRow) {
        var m = Self.measured()
        #expect(m.threshold == 300_000)
        _ = m.pendingEstimated(row.pending)
        let action = m.decide(now: .milliseconds(100), guestRunning: true)
        #expect((Self.switched(action) != nil) == row.switches, "\(action)")
    }

    @Test func noBandwidthSampleYetHoldsAnythingPendingButNotNothing() {
        var m = Self.machine()
        _ = m.pendingEstimated([1, 0])
        #expect(Self.switched(m.decide(now: .milliseconds(10), guestRunning: true)) == nil)
        #expect(m.predictionQEMU == nil && m.prediction == nil, "no figure to predict with")

        var empty = Self.machine()
        _ = empty.pendingEstimated([0, 0])
        let d = Self.switched(empty.decide(now: .milliseconds(10), guestRunning: true))
        #expect(d?.predictedDowntime == .zero && d?.pendingBytes == 0)
    }

    @Test func theExactFigureIsAskedWheneverTheEstimateWouldAllowTheSwitchover() {
        var m = Self.measured()
        #expect(m.pendingEstimated([300_001, 0]) == .decide)
        #expect(m.pendingEstimated([300_000, 0]) == .queryExact, "at the threshold too, where QEMU asks only under it")
        #expect(m.pendingEstimated([299_999, 0]) == .queryExact)
        m.pendingExact([400_000, 0])
        #expect(m.pendingIsExact)
        #expect(Self.switched(m.decide(now: .milliseconds(100), guestRunning: true)) == nil, "the exact figure decides")
    }

    /// Before any bandwidth figure the threshold is 0: an estimate of nothing (pre-copy drained)
    /// must not switch over before the exact figure (a device's stop-copy size) is known — QEMU's
    /// rule (exact only under the threshold) would move all of it in the downtime.
    @Test func anEstimateOfNothingBeforeAnyBandwidthAsksForTheExactFigure() {
        var m = Self.machine()
        #expect(m.threshold == 0)
        #expect(m.pendingEstimated([0, 0]) == .queryExact)
        m.pendingExact([0, 100 << 20])
        #expect(Self.switched(m.decide(now: .milliseconds(10), guestRunning: true)) == nil)
        #expect(m.prediction == nil, "no bandwidth to predict with")
        // The first window measures what setup and the passes moved; then the decision can come.
        #expect(m.clockTick(now: .milliseconds(100), bytesWritten: 64 << 20) == .windowClosed)
        #expect(m.pendingEstimated([0, 0]) == .queryExact)
        m.pendingExact([0, 100 << 20])
        let d = Self.switched(m.decide(now: .milliseconds(100), guestRunning: true))
        #expect(d?.pendingBytes == 100 << 20)
        #expect(d?.predictedDowntime.map { $0 > .zero } == true, "\(String(describing: d))")
    }

    /// A window whose bytes took under 1 ms of work (the rest idle) still measures: at 1 ms.
    @Test func aWindowOfLessThanOneMillisecondOfWorkCountsAsOne() {
        var m = Self.machine()
        m.idle(.microseconds(99_800))
        #expect(m.clockTick(now: .milliseconds(100), bytesWritten: 500) == .windowClosed)
        #expect(m.bandwidthPerMs == 500)
    }

    @Test func theBandwidthIsTheBestOfTheRecentMeasuredWindowsAndIgnoresIdleTime() {
        var m = Self.machine()
        // A small window before any measurement stands in for one.
        #expect(m.clockTick(now: .milliseconds(100), bytesWritten: 1000) == .windowClosed)
        #expect(m.bandwidthPerMs == 10)
        // 200 kB in a window half idle: 4 MB/s.
        m.idle(.milliseconds(50))
        _ = m.clockTick(now: .milliseconds(200), bytesWritten: 201_000)
        #expect(m.bandwidthPerMs == 4000)
        // A slower window (the destination was busy) does not lower the figure within 5 windows.
        var written = 201_000
        for k in 3...7 {
            written += 100_000
            _ = m.clockTick(now: .milliseconds(100 * k), bytesWritten: written)
            #expect(m.bandwidthPerMs == (k < 7 ? 4000 : 1000), "window \(k)")
        }
        // Shorter than 100 ms: no window closes.
        #expect(m.clockTick(now: .milliseconds(750), bytesWritten: written + 1) == .none)
        // A fixed switchover bandwidth wins over any measurement.
        let fixed = Self.machine { $0.switchoverBandwidth = 2_000_000 }
        #expect(fixed.bandwidthPerMs == 2000 && fixed.threshold == 600_000)
    }

    // MARK: Switchover-ack

    @Test func theAcknowledgementGatesGivenRevokedAndGivenAgain() {
        var m = Self.measured { $0.switchoverAck = true }
        _ = m.pendingEstimated([1000, 0])
        #expect(Self.switched(m.decide(now: .milliseconds(100), guestRunning: true)) == nil)
        m.acknowledgementChanged(true)
        var copy = m
        #expect(Self.switched(copy.decide(now: .milliseconds(110), guestRunning: true)) != nil)
        m.acknowledgementChanged(false)  // revoked: new initial data
        #expect(Self.switched(m.decide(now: .milliseconds(110), guestRunning: true)) == nil)
        // A guest the VMM stopped itself needs no acknowledgement (QEMU).
        #expect(Self.switched(m.decide(now: .milliseconds(120), guestRunning: false)) != nil)
    }

    @Test func theSwitchoverTimeoutEndsTheWaitForTheAcknowledgement() {
        var m = Self.measured {
            $0.switchoverAck = true
            $0.switchoverTimeout = .seconds(2)
            $0.stallTimeout = .seconds(1)
        }
        _ = m.pendingEstimated([0, 0])
        for t in stride(from: 100, to: 2100, by: 500) {
            #expect(m.decide(now: .milliseconds(t), guestRunning: true) == .iterate(nil), "t = \(t) ms")
            // Waiting for the acknowledgement is never a stall.
            #expect(m.passCompleted(now: .milliseconds(t), bytesWritten: Self.rate / 10, moved: false, anyMore: false) != .fail(.stall("")))
            if case .fail = m.passCompleted(now: .milliseconds(t), bytesWritten: Self.rate / 10, moved: false, anyMore: false) {
                Issue.record("a stall while waiting for the acknowledgement at \(t) ms")
            }
        }
        guard case .fail(.acknowledgementTimeout) = m.decide(now: .milliseconds(2100), guestRunning: true) else {
            Issue.record("expected the acknowledgement timeout")
            return
        }
    }

    // MARK: The destination's backlog and load time

    /// One row: the destination's figures → the prediction's parts, and whether the source switches.
    struct BacklogRow: Sendable, CustomTestStringConvertible {
        var name: String
        var extensions = true
        var countLoadTime = true
        var backlogMs: [UInt64] = [0, 0]
        var fixedMs: [UInt64] = [0, 0]
        var multifd: [Bool] = [false, false]
        var expectedBacklogMs: Int64
        var expectedFinalLoadMs: Int64
        var switches: Bool
        var testDescription: String { name }
    }

    @Test(arguments: [
        BacklogRow(name: "idle destination", expectedBacklogMs: 0, expectedFinalLoadMs: 0, switches: true),
        BacklogRow(name: "backlog within the limit", backlogMs: [100, 50], expectedBacklogMs: 150, expectedFinalLoadMs: 0, switches: true),
        BacklogRow(name: "backlog over the limit", backlogMs: [250, 50], expectedBacklogMs: 300, expectedFinalLoadMs: 0, switches: false),
        BacklogRow(
            name: "backlog with final loads", backlogMs: [150, 0], fixedMs: [80, 80],
            expectedBacklogMs: 150, expectedFinalLoadMs: 160, switches: false),
        BacklogRow(
            name: "multifd final loads run in parallel", backlogMs: [150, 0], fixedMs: [80, 80], multifd: [true, true],
            expectedBacklogMs: 150, expectedFinalLoadMs: 80, switches: true),
        BacklogRow(
            name: "one device on the main channel, one over multifd", fixedMs: [100, 180], multifd: [false, true],
            expectedBacklogMs: 0, expectedFinalLoadMs: 180, switches: true),
        BacklogRow(
            name: "QEMU peer: no extensions, the figures do not count", extensions: false, backlogMs: [500, 0],
            expectedBacklogMs: 500, expectedFinalLoadMs: 0, switches: true),
        BacklogRow(
            name: "load time not counted on request", countLoadTime: false, backlogMs: [500, 0],
            expectedBacklogMs: 500, expectedFinalLoadMs: 0, switches: true)
    ])
    func theDestinationsBacklogAndLoadTimeInThePrediction(_ row: BacklogRow) throws {
        var m = Self.measured(multifd: row.multifd, extensions: row.extensions) { $0.countDestinationLoadTime = row.countLoadTime }
        for i in 0..<2 {
            m.backlogReported(Self.backlog(i, ms: row.backlogMs[i]), handler: i, at: .milliseconds(100))
            m.loadReported(Self.report(i, fixed: row.fixedMs[i] * 1000), handler: i)
        }
        _ = m.pendingEstimated([10_000, 0])  // 10 ms of transfer at 1 MB/s
        let action = m.decide(now: .milliseconds(100), guestRunning: true)
        let p = try #require(m.prediction)
        #expect(p.transfer == .milliseconds(10))
        #expect(p.destinationBacklog == .milliseconds(row.expectedBacklogMs))
        #expect(p.finalLoad == .milliseconds(row.expectedFinalLoadMs))
        #expect(p.total == p.transfer + p.destinationBacklog + p.finalLoad)
        #expect((Self.switched(action) != nil) == row.switches, "\(action)")
        if let d = Self.switched(action) {
            #expect(d.prediction == p && d.predictedDowntime == p.total && d.predictedDowntimeQEMU == p.transfer)
        }
    }

    @Test func aBacklogAgesUntilTheDestinationReportsAgain() {
        var m = Self.measured()
        m.backlogReported(Self.backlog(0, ms: 500), handler: 0, at: .milliseconds(100))
        _ = m.pendingEstimated([0, 0])
        // Held: 500 ms left; the destination works it off while no report comes.
        #expect(Self.switched(m.decide(now: .milliseconds(100), guestRunning: true)) == nil)
        #expect(m.destinationBacklog(now: .milliseconds(250)) == .milliseconds(350))
        #expect(Self.switched(m.decide(now: .milliseconds(250), guestRunning: true)) == nil)
        #expect(Self.switched(m.decide(now: .milliseconds(299), guestRunning: true)) == nil, "301 ms left")
        #expect(Self.switched(m.decide(now: .milliseconds(300), guestRunning: true))?.predictedDowntime == .milliseconds(300))
        // A newer report replaces the aged figure.
        m.backlogReported(Self.backlog(0, ms: 350), handler: 0, at: .milliseconds(310))
        #expect(m.destinationBacklog(now: .milliseconds(320)) == .milliseconds(340))
        #expect(m.destinationBacklog(now: .seconds(5)) == .zero)
    }

    @Test func theSourceWaitsUntilTheDestinationHasLoadedWhatCameBeforeThePreviousDecision() {
        var m = Self.measured()
        _ = m.pendingEstimated([1000, 0])
        // No position reported (an older Switchover destination): QEMU's rule and the figures.
        #expect(Self.switched(m.decide(now: .milliseconds(100), guestRunning: true, bytesWritten: 5000)) != nil)

        var r = Self.measured()
        _ = r.pendingEstimated([1000, 0])
        func report(through: UInt64, at ms: Int64) {
            r.backlogReported(
                LoadBacklogReport(idstr: "h0", instanceID: 0, bytes: 0, expectedMicros: 0, loadedThrough: through),
                handler: 0, at: .milliseconds(ms))
        }
        report(through: 1000, at: 100)
        // Iteration began at 0 bytes: loaded through 1000 covers it, and 5000 are written now.
        var first = r
        #expect(Self.switched(first.decide(now: .milliseconds(100), guestRunning: true, bytesWritten: 5000)) != nil)
        // After a decision at 5000 written, the destination must reach 5000 first.
        r = Self.measured()
        _ = r.pendingEstimated([400_000, 0])  // over the threshold: iterate
        #expect(r.decide(now: .milliseconds(100), guestRunning: true, bytesWritten: 5000) == .iterate(nil))
        _ = r.pendingEstimated([1000, 0])
        report(through: 4999, at: 110)
        #expect(Self.switched(r.decide(now: .milliseconds(110), guestRunning: true, bytesWritten: 6000)) == nil)
        // Waiting for the destination is no stall.
        if case .fail = r.passCompleted(now: .seconds(100), bytesWritten: 6000, moved: false, anyMore: false) {
            Issue.record("a stall while the destination loads")
        }
        report(through: 5000, at: 120)
        #expect(Self.switched(r.decide(now: .milliseconds(120), guestRunning: true, bytesWritten: 6000)) == nil, "now 6000 came before")
        report(through: 6000, at: 130)
        #expect(Self.switched(r.decide(now: .milliseconds(130), guestRunning: true, bytesWritten: 6100)) != nil)
        // A QEMU peer, or the load time not counted: no such wait.
        var off = Self.measured { $0.countDestinationLoadTime = false }
        _ = off.pendingEstimated([400_000, 0])
        _ = off.decide(now: .milliseconds(100), guestRunning: true, bytesWritten: 5000)
        off.backlogReported(
            LoadBacklogReport(idstr: "h0", instanceID: 0, bytes: 0, expectedMicros: 0, loadedThrough: 0), handler: 0, at: .zero)
        _ = off.pendingEstimated([1000, 0])
        #expect(Self.switched(off.decide(now: .milliseconds(110), guestRunning: true, bytesWritten: 6000)) != nil)
    }

    @Test func aShrinkingBacklogIsProgressAndAGrowingOneIsNot() {
        // The pending data stays flat (nothing left to send before the stop), so convergence
        // depends on the backlog alone.
        var shrinking = Self.measured { $0.convergenceWindow = .seconds(1) }
        var growing = Self.measured {
            $0.convergenceWindow = .seconds(1)
            $0.abortWhenNotConverging = true
        }
        var notices: [Machine.DecideAction] = []
        for step in 0..<30 {
            let now = Duration.milliseconds(100 + 100 * step)
            shrinking.backlogReported(Self.backlog(0, ms: UInt64(3000 - 90 * step)), handler: 0, at: now)
            growing.backlogReported(Self.backlog(0, ms: UInt64(400 + 10 * step)), handler: 0, at: now)
            _ = shrinking.pendingEstimated([1000, 0])
            _ = growing.pendingEstimated([1000, 0])
            #expect(shrinking.decide(now: now, guestRunning: true) == .iterate(nil), "step \(step)")
            notices.append(growing.decide(now: now, guestRunning: true))
            // The source waits for the destination: never a stall.
            if case .fail = shrinking.passCompleted(now: now, bytesWritten: Self.rate / 10, moved: false, anyMore: false) {
                Issue.record("a stall while the destination works, step \(step)")
            }
        }
        #expect(shrinking.converging)
        let failure = notices.first { if case .fail = $0 { true } else { false } }
        guard case .fail(.notConverging(let why))? = failure else {
            Issue.record("a growing backlog was never judged: \(notices.suffix(3))")
            return
        }
        #expect(why.contains("exceeds the limit") && why.contains("backlog"))
        #expect(!growing.converging)
    }

    @Test func aLimitTooSmallToEverSwitchIsReportedNotConverging() {
        // 400 ms of final load per device can never fit 300 ms; QEMU's formula alone would switch.
        var m = Self.measured { $0.convergenceWindow = .seconds(2) }
        m.loadReported(Self.report(0, fixed: 400_000), handler: 0)
        var seen: [Machine.DecideAction] = []
        for step in 0..<40 {
            _ = m.pendingEstimated([1000, 0])
            seen.append(m.decide(now: .milliseconds(100 + 100 * step), guestRunning: true))
        }
        #expect(!seen.contains { Self.switched($0) != nil })
        #expect(seen.contains { if case .iterate(.notConverging) = $0 { true } else { false } }, "reported once")
        #expect(seen.filter { if case .iterate(.some) = $0 { true } else { false } }.count == 1)
        #expect(!m.converging)
    }

    @Test func hostileFiguresMakeALongPredictionNeverATrap() throws {
        var m = Self.measured()
        m.backlogReported(
            LoadBacklogReport(idstr: "h0", instanceID: 0, bytes: .max, expectedMicros: .max), handler: 0, at: .milliseconds(100))
        m.backlogReported(
            LoadBacklogReport(idstr: "h1", instanceID: 0, bytes: .max, expectedMicros: .max), handler: 1, at: .milliseconds(100))
        m.loadReported(Self.report(0, fixed: .max, rateBytes: 1 << 20, rateMicros: .max), handler: 0)
        m.loadReported(Self.report(1, fixed: .max), handler: 1)
        // Out-of-range handler numbers are ignored, not a crash.
        m.loadReported(Self.report(7), handler: 7)
        m.backlogReported(Self.backlog(7, ms: 1), handler: -1, at: .zero)
        _ = m.pendingEstimated([.max, .max])
        #expect(Self.switched(m.decide(now: .milliseconds(100), guestRunning: true)) == nil)
        let p = try #require(m.prediction)
        #expect(p.total == Duration.predictionCeiling)
        #expect(p.destinationBacklog == Duration.predictionCeiling)
    }

    // MARK: Passes: stall and rate limit

    @Test func aPassSleepsWhenTheBudgetIsSpentOrNothingIsLeftAndFailsOnAStall() {
        var m = Self.measured {
            $0.maxBandwidth = 1_000_000  // 100 kB per window
            $0.stallTimeout = .seconds(1)
        }
        _ = m.pendingEstimated([10_000_000, 0])
        _ = m.decide(now: .milliseconds(100), guestRunning: true)
        #expect(!m.budgetSpent(bytesWritten: 100_000 + 99_999))
        #expect(m.budgetSpent(bytesWritten: 100_000 + 100_000))
        #expect(
            m.passCompleted(now: .milliseconds(150), bytesWritten: 200_000, moved: true, anyMore: true)
                == .sleep(until: .milliseconds(200), rateLimited: true))
        #expect(m.passCompleted(now: .milliseconds(150), bytesWritten: 150_000, moved: true, anyMore: true) == .next)
        #expect(
            m.passCompleted(now: .milliseconds(150), bytesWritten: 150_000, moved: true, anyMore: false)
                == .sleep(until: .milliseconds(155), rateLimited: false))
        // Nothing moves for the stall timeout, with data pending and nothing awaited.
        #expect(m.passCompleted(now: .milliseconds(1149), bytesWritten: 150_000, moved: false, anyMore: false) != .next)
        guard case .fail(.stall) = m.passCompleted(now: .milliseconds(1150), bytesWritten: 150_000, moved: false, anyMore: false) else {
            Issue.record("expected a stall")
            return
        }
    }
}
