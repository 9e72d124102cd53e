import Logging
import MigrationStream

extension SourceRun {
    // MARK: Iteration and the switchover decision

    var liveIndices: [Int] {
        entries.indices.filter { entries[$0].handler.isActive && entries[$0].handler.isLive }
    }

    func iterate() throws {
        enter(.iterating)
        machine = SwitchoverStateMachine(configuration: machine.configuration, now: setupStart.time, bytesWritten: setupStart.bytes)
        let live = liveIndices.filter { !precopyOverChannels.contains($0) }
        if let multifd, !precopyOverChannels.isEmpty {
            multifd.startPrecopy(
                precopyOverChannels.sorted().map { i in (i, entries[i].identity, entries[i].handler, contexts[i] as SaveContext) },
                windowBudget: params.maxBandwidth.map { Int($0 / 10) }, clock: clock)
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
    func feedReturnPath() {
        guard let rp else { return }
        machine.acknowledgementChanged(rp.acknowledged)
        guard extensionsOn else { return }
        let (reports, backlogs) = rp.state.withLock { ($0.loadReports, $0.backlogs) }
        for (key, report) in reports { if let i = keyIndex[key] { machine.loadReported(report, handler: i) } }
        for (key, b) in backlogs { if let i = keyIndex[key] { machine.backlogReported(b.report, handler: i, at: b.at) } }
    }

    func error(_ failure: SwitchoverStateMachine.Failure) -> MigrationError {
        switch failure {
        case .stall(let text):
            MigrationError(.stallTimeout, phase: phase, offset: writer.bytesWritten, message: text)
        case .acknowledgementTimeout(let text):
            MigrationError(.switchoverAckTimeout, phase: phase, message: text)
        case .notConverging(let text):
            MigrationError(.notConverging, phase: phase, offset: writer.bytesWritten, message: text)
        }
    }
}
