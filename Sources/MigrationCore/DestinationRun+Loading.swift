import Logging
import MigrationStream

extension DestinationRun {
    // MARK: The load loop

    func load() throws {
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
            loadedThrough.set(through)
            let now = clock.now
            if now - lastProgress >= MigrationParameters.rateLimitWindow {
                lastProgress = now
                emitProgress()
            }
        }
    }

    func loadSection(_ header: SectionHeader, at: Int) throws {
        let key = header.binding.key
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
        if pastInitialData, e.handler.loadBacklog(context: contexts[i]) != .none { pastInitialData = false }
        tally.loaded(i, bytes: loaded, spent: spent, pastInitialData: pastInitialData)
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
    func reportLoad(_ i: Int) throws {
        guard extensionsActive else { return }
        guard tally.reportDue(i, now: clock.now) else { return }
        let e = entries[i]
        let report = LoadReport(
            idstr: e.identity.idstr, instanceID: e.identity.instanceID, bytesLoaded: tally.moved.bytes[i],
            loadMicros: tally.loadTime[i].wholeMicroseconds,
            fixedCostMicros: e.handler.expectedFinalLoadCostMicros(context: contexts[i]),
            rateBytes: tally.rateBytes[i], rateMicros: tally.rateTime[i].wholeMicroseconds)
        do {
            try rp.send(.loadReport(report))
        } catch {
            throw wrap(error, handler: e.identity, message: "sending a load report failed")
        }
    }

    func process(_ command: MigrationCommand, at: Int) throws {
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
                        returnPath: rp, position: { position.get }, logger: logger)
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

    func preflight(_ payload: [UInt8], at: Int) throws {
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
}
