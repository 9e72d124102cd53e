import Logging
import MigrationStream

// Source setup: the parameters checked, the multifd channels opened, the header and the
// pre-flight exchange, the START sections.

extension SourceRun {
    func validate() throws {
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

    func validateMultifd() throws {
        try MultifdPlan.validate(params)
        if let refusal = multifdPlan.refusal { throw MigrationError.invalidParameters(refusal) }
        guard params.multifdChannels > 0 else { return }
        switch channelSource {
        case .transport(let t):
            if t is FileTransport || t is DescriptorTransport {
                throw MigrationError.invalidParameters(
                    "multifd channels need a transport that can open more connections (tcp:, unix:), not \(t)")
            }
        case .given(let list):
            guard list.count == params.multifdChannels else {
                throw MigrationError.invalidParameters(
                    "\(list.count) multifd channel connections given, multifdChannels is \(params.multifdChannels)")
            }
        }
    }

    /// Opens the multifd channels (each starts with its MultiFDInit) before the main header.
    func openMultifdChannels() throws {
        let count = params.multifdChannels
        guard count > 0 else { return }
        let connections: [any MigrationConnection]
        do {
            switch channelSource {
            case .transport(let t):
                connections = try MultifdChannels.open(
                    count: count, uuid: multifdUUID(owner.configuration), writeTimeout: params.stallTimeout
                ) {
                    if owner.control.isCancelled { throw TransportError.shutDown }
                    return try t.connect()
                }
            case .given(let list):
                var iterator = list.makeIterator()
                connections = try MultifdChannels.open(
                    count: count, uuid: multifdUUID(owner.configuration), writeTimeout: params.stallTimeout
                ) {
                    guard let next = iterator.next() else { throw MultifdError.channelSetup("too few channel connections") }
                    return next
                }
            }
        } catch {
            if case .given(let list) = channelSource { for c in list { c.close() } }
            throw MigrationError(.multifdFailed, phase: phase, message: "could not open the multifd channels", cause: error)
        }
        multifd = MultifdSourceSession(connections: connections, queueDepth: params.multifdSendQueueDepth)
    }

    // MARK: Header and pre-flight

    func header() throws {
        enter(.header)
        connection.setTimeouts(read: nil, write: params.stallTimeout)
        try openMultifdChannels()
        for (i, e) in entries.enumerated() where e.handler.isActive {
            do {
                try e.handler.savePrepare(context: contexts[i])
            } catch {
                throw MigrationError(
                    .handlerFailed, phase: phase, handler: e.identity, message: "savePrepare refused the migration", cause: error)
            }
        }
        try writer.writeFileHeader()
        try writer.writeConfiguration(owner.configuration)
        if returnPathOn {
            let rp = SourceReturnPath(
                extensions: extensionsOn, known: Set(entries.map { $0.identity.key }), clock: clock, logger: logger)
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
        try writer.writeCommand(.switchoverHello(version: 1, features: SwitchoverFeatures.loadBacklog.rawValue))
        let inventory = PreflightInventory(
            machineType: owner.configuration.machineType,
            handlers: entries.filter { $0.handler.isActive }.map {
                .init(
                    idstr: $0.identity.idstr, instanceID: $0.identity.instanceID, versionID: $0.identity.versionID,
                    live: $0.handler.isLive, identity: $0.handler.preflightIdentity)
            })
        try writer.writeCommand(.preflight(try inventory.encoded()))
        try writer.flush()
        enter(.preflight)
        try rp.awaitPreflightAnswer(timeout: params.stallTimeout, phase: phase, offset: writer.bytesWritten) { owner.control.isCancelled }
    }

    // MARK: Setup

    func setup() throws {
        enter(.setup)
        setupStart = (clock.now, writer.bytesWritten)
        for i in entries.indices where entries[i].handler.isActive && entries[i].handler.isLive {
            try writeSection(.start, i) { h, w, c in try h.saveSetup(to: w, context: c) }
        }
        try flush()
        setupTime = clock.now - startTime
    }
}
