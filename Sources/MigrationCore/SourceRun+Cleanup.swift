import Logging
import MigrationStream

// A failed or cancelled migration: the root cause named, the channels and the return path
// closed, the guest resumed, every handler cleaned up.

extension SourceRun {
    func fail(_ error: any Error) -> MigrationError {
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
            abandon(list)
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
        for e in entries { e.handler.saveCleanup(succeeded: false) }
        vmRunning.set(owner.vm.isRunning)
        connection.close()
        enter(cancelled ? .cancelled : .failed)
        return result
    }

    func isConnectionLoss(_ error: MigrationError) -> Bool {
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
}
