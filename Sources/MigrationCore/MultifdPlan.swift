import MigrationStream

/// How each handler's multifd transfer resolves for one migration (both ends run the same rule).
struct MultifdPlan {
    /// Per registry entry: whether its stop-copy data goes over the channels.
    let enabled: [Bool]
    /// The first refusal ("on" without channels or without support), if any.
    let refusal: String?

    init(entries: [RegisteredHandler], parameters: MigrationParameters) {
        var enabled: [Bool] = []
        var refusal: String?
        let channels = parameters.multifdChannels
        for e in entries {
            let setting = parameters.multifdTransfer[e.identity.key] ?? parameters.multifdTransferDefault
            let capable = e.handler.isActive && e.handler.isLive && !e.handler.multifdSupport.isEmpty
            switch setting {
            case .off:
                enabled.append(false)
            case .auto:
                enabled.append(channels > 0 && capable)
            case .on:
                enabled.append(channels > 0 && capable)
                if refusal == nil, e.handler.isActive {
                    if channels <= 0 {
                        refusal =
                            "\(e.identity): x-migration-multifd-transfer is on, but the migration has no multifd channels (multifdChannels = 0)"
                    } else if !capable {
                        refusal =
                            "\(e.identity): x-migration-multifd-transfer is on, but the handler does not support multifd transfer"
                            + (e.handler.isLive ? "" : " (only live handlers can)")
                    }
                }
            }
        }
        self.enabled = enabled
        self.refusal = refusal
    }

    var any: Bool { enabled.contains(true) }

    /// Checks the multifd parameters that concern both ends.
    static func validate(_ p: MigrationParameters) throws {
        guard (0...255).contains(p.multifdChannels) else {
            throw MigrationError.invalidParameters("multifdChannels must be 0 to 255 (a channel id is one byte), not \(p.multifdChannels)")
        }
        guard p.multifdMaxQueuedBuffers >= 1 else {
            throw MigrationError.invalidParameters("multifdMaxQueuedBuffers must be at least 1, not \(p.multifdMaxQueuedBuffers)")
        }
        guard p.multifdMaxPacketSize >= VFIODeviceStatePacketHeader.encodedLength, p.multifdMaxPacketSize <= Int(UInt32.max) else {
            throw MigrationError.invalidParameters("multifdMaxPacketSize must be 12 to 2^32-1 bytes, not \(p.multifdMaxPacketSize)")
        }
        guard p.multifdQueueBudget >= p.multifdMaxPacketSize else {
            throw MigrationError.invalidParameters(
                "multifdQueueBudget (\(p.multifdQueueBudget) bytes) must be at least multifdMaxPacketSize (\(p.multifdMaxPacketSize) bytes)"
            )
        }
        guard p.multifdSendQueueDepth >= 1 else {
            throw MigrationError.invalidParameters("multifdSendQueueDepth must be at least 1, not \(p.multifdSendQueueDepth)")
        }
        if p.multifdPrecopy && p.multifdChannels == 0 {
            throw MigrationError.invalidParameters("multifdPrecopy needs multifd channels (multifdChannels = 0)")
        }
    }
}

/// The 16-byte uuid every channel header carries: the VM's (the configuration's), or zeros
/// when it has none (QEMU's default `qemu_uuid`).
func multifdUUID(_ configuration: MachineConfiguration) -> [UInt8] {
    if let uuid = configuration.uuid, uuid.count == 16 { return uuid }
    return [UInt8](repeating: 0, count: 16)
}
