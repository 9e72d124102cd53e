import Logging
import MigrationStream

extension DestinationRun {
    // MARK: Header and configuration

    func header() throws {
        enter(.header)
        connection.setTimeouts(read: params.stallTimeout, write: params.stallTimeout)
        let config: MachineConfiguration
        do {
            try reader.readFileHeader()
            config = try reader.readConfiguration()
        } catch {
            throw wrap(error, message: "the stream header or configuration could not be read")
        }
        sourceMachine = config.machineType
        let local = owner.configuration
        func refuse(_ text: String) -> MigrationError {
            MigrationError(.incompatible, phase: phase, offset: reader.offset, message: text)
        }
        guard config.machineType == local.machineType else {
            throw refuse(
                "machine type mismatch: the stream is for \"\(config.machineType)\", this destination runs \"\(local.machineType)\"")
        }
        if let theirs = config.targetPageBits, let ours = local.targetPageBits, theirs != ours {
            throw refuse("target page bits mismatch: the stream has \(theirs), this destination \(ours)")
        }
        if Set(config.capabilities ?? []) != Set(local.capabilities ?? []) {
            throw refuse(
                "validated capabilities differ: the stream has \(config.capabilities ?? []), this destination \(local.capabilities ?? [])")
        }
        if let theirs = config.uuid, let ours = local.uuid, theirs != ours {
            throw refuse("VM UUID mismatch")
        }
        // Every multifd channel carries the migration's uuid (the VM's, zeros without one).
        let uuid = multifdUUID(config)
        for c in channels where c.uuid != uuid {
            throw MigrationError(
                .multifdFailed, phase: phase, offset: reader.offset,
                message: "multifd channel \(c.id) belongs to another migration (its uuid differs from the stream's)",
                cause: MultifdError.channelSetup("uuid mismatch on channel \(c.id)"))
        }
    }

    // MARK: Setup

    func setup() throws {
        enter(.setup)
        for (i, e) in entries.enumerated() where e.handler.isActive {
            do {
                try e.handler.loadSetup(context: contexts[i])
            } catch {
                throw MigrationError(.handlerFailed, phase: phase, handler: e.identity, message: "loadSetup failed", cause: error)
            }
        }
        var needed: Set<HandlerIdentity.Key> = []
        if params.switchoverAck {
            for (i, e) in entries.enumerated() where e.handler.isActive && e.handler.switchoverAckNeeded(context: contexts[i]) {
                needed.insert(e.identity.key)
            }
        }
        acks.configure(enabled: params.switchoverAck, needed: needed)
        if !channels.isEmpty {
            let session = MultifdDestinationSession(
                channels: channels, devices: entries.indices.filter { multifdPlan.enabled[$0] }.map { ($0, entries[$0].identity) },
                known: entries.map(\.identity), parameters: params, watchdog: watchdog, logger: logger)
            multifd = session
            session.startReceiving()
            // Pre-copy over the channels: the load threads run from now on.
            if params.multifdPrecopy { startMultifdLoads() }
        }
    }

    func startMultifdLoads() {
        guard let multifd, multifd.hasDevices else { return }
        var handlers: [Int: (any MigrationHandler, LoadContext)] = [:]
        for i in entries.indices where multifdPlan.enabled[i] { handlers[i] = (entries[i].handler, contexts[i]) }
        multifd.startLoading(handlers: handlers, clock: clock)
    }
}
