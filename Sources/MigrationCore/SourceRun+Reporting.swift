import Logging
import MigrationStream

extension SourceRun {
    // MARK: Reporting

    func handlerAckState(_ i: Int) -> AckState {
        guard params.switchoverAck else { return .notNeeded }
        return rp?.ackState(of: entries[i].identity.key, ackEnabled: true) ?? .unknown
    }

    /// An acknowledgement given or withdrawn is reported at once, not at the next window.
    func emitProgressIfAckChanged() {
        guard params.switchoverAck else { return }
        let states = entries.indices.map(handlerAckState)
        if states != lastAckStates {
            lastAckStates = states
            emitProgress()
        }
    }

    func emitProgress() {
        let pending = machine.pending
        let event = MigrationProgress(
            phase: phase, elapsed: clock.now - startTime, bytesTransferred: UInt64(writer.bytesWritten),
            iterations: iterations, pendingBytes: pending.saturatingSum, bandwidth: machine.bandwidthPerMs * 1000,
            thresholdBytes: machine.threshold, predictedDowntimeQEMU: machine.predictionQEMU, predictedDowntime: machine.prediction?.total,
            switchoverAcknowledged: !params.switchoverAck || (rp?.acknowledged ?? false),
            handlers: entries.indices.map {
                HandlerProgress(identity: entries[$0].identity, bytes: tally.bytes[$0], pending: pending[$0], ackState: handlerAckState($0))
            },
            converging: machine.converging, prediction: machine.prediction)
        owner.progressContinuation.yield(event)
    }

    func statistics(total: Duration, downtime: Duration?) -> MigrationStatistics {
        let reports = rp?.state.withLock { $0.loadReports } ?? [:]
        let multifdBytes = multifd?.bytesPerEntry ?? [:]
        return MigrationStatistics(
            totalTime: total, setupTime: setupTime, downtime: downtime,
            downtimeEnd: rp == nil ? .eofWritten : .destinationShut, decision: machine.decision,
            bytesTransferred: UInt64(writer.bytesWritten), iterations: iterations, rateLimitWaits: rateLimitWaits,
            exactQueries: exactQueries, usedExtensions: extensionsOn,
            multifdChannels: multifd?.sender.channelCount ?? 0, multifdBytes: multifd?.sender.bytesWritten ?? 0,
            handlers: entries.indices.map { i in
                let report = reports[entries[i].identity.key]
                return HandlerStatistics(
                    identity: entries[i].identity, bytes: tally.bytes[i] + (multifdBytes[i] ?? 0), sections: tally.sections[i],
                    loadTime: report.map { .microseconds(Int64($0.loadMicros)) },
                    bytesLoaded: report?.bytesLoaded, ackState: handlerAckState(i))
            })
    }
}
