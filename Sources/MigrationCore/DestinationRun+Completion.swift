import Logging
import MigrationStream

extension DestinationRun {
    // MARK: Endings

    func finish() throws {
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
        cleanUpAndSendVerdict(succeeded: true) { logger.error("the guest runs here, but SHUT(0) could not be sent: \($0)") }
        backlogReporter?.stop()
        connection.close()
        enter(.completed)
    }

    func fail(_ error: any Error) -> MigrationError {
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
            abandon(channels.map(\.connection))
        }
        logger.info("destination failed: \(result)")
        backlogReporter?.stop()
        cleanUpAndSendVerdict(succeeded: false) { logger.debug("SHUT(1) could not be sent: \($0)") }
        connection.shutdown()
        connection.close()
        enter(cancelled ? .cancelled : .failed)
        return result
    }

    /// Every handler cleans up, then the source hears the verdict (SHUT 0 or 1); `unsent` is
    /// told why a verdict could not be sent.
    private func cleanUpAndSendVerdict(succeeded: Bool, unsent: (any Error) -> Void) {
        for e in entries { e.handler.loadCleanup(succeeded: succeeded) }
        do {
            try rp.send(.shut(succeeded ? 0 : 1))
        } catch {
            unsent(error)
        }
    }

    /// The main stream ended or broke (rather than carrying something wrong).
    static func isStreamLoss(_ error: any Error) -> Bool {
        var next: (any Error)? = error
        while let e = next {
            if e is TransportError { return true }
            if case .truncated? = e as? StreamError { return true }
            next = (e as? MigrationError)?.cause
        }
        return false
    }

    func multifdFailure(_ error: MultifdError) -> MigrationError {
        MigrationError(
            .multifdFailed, phase: phase, handler: MultifdDestinationSession.device(of: error),
            message: error.channel.map { "multifd channel \($0) failed" } ?? "the multifd transfer failed",
            cause: error)
    }
}
