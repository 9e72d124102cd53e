import Logging
import MigrationStream

// The switchover: every device stopped, the END and FULL sections, the destination's verdict;
// then the successful ending.

extension SourceRun {
    // MARK: Completion

    func complete() throws {
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

    func succeed() -> MigrationStatistics {
        let end = clock.now
        let downtime = weStoppedVM ? downtimeStart.map { end - $0 } : nil
        rp?.join(timeout: .seconds(5))
        for e in entries { e.handler.saveCleanup(succeeded: true) }
        connection.close()
        enter(.completed)
        return statistics(total: end - startTime, downtime: downtime)
    }
}
