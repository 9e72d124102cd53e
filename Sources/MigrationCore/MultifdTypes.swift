import MigrationStream

/// A handler's per-device multifd setting: QEMU's vfio-pci property
/// `x-migration-multifd-transfer` (ON/OFF/AUTO, default AUTO).
public enum MultifdTransferSetting: String, Sendable, Hashable, CaseIterable {
    /// Use multifd when the migration has channels and the handler supports it.
    case auto
    /// Always: a migration without channels, or a handler without support, is refused at start.
    case on
    /// Never: the stop-copy data stays in the END section of the main channel.
    case off
}

/// Why a multifd transfer failed. Carried as the ``MigrationError/cause`` of a ``MigrationError``
/// with code ``MigrationError/Code/multifdFailed``; every case names the channel or the device.
public enum MultifdError: Error, Sendable, CustomStringConvertible {
    /// The channels could not be set up: a connection missing, a bad or duplicate channel
    /// header, a uuid that is not the migration's.
    case channelSetup(String)
    /// A channel failed while moving packets (write or read error, connection cut, a packet
    /// cut short). `offset` is the channel's byte offset.
    case channelFailed(channel: Int, offset: Int, underlying: any Error)
    /// A packet names a device that has no handler here.
    case unknownDevice(channel: Int, idstr: String, instanceID: UInt32)
    /// A packet for a device whose multifd transfer is off on this side (both ends must
    /// resolve `x-migration-multifd-transfer` to the same value).
    case transferOff(channel: Int, device: HandlerIdentity)
    /// Two packets of one device carry the same index.
    case duplicateIndex(channel: Int, device: HandlerIdentity, index: UInt32)
    /// A device has more received-but-not-loaded buffers than ``MigrationParameters/multifdMaxQueuedBuffers``.
    case queueLimitExceeded(channel: Int, device: HandlerIdentity, limit: Int)
    /// Admitting a packet would make the received-but-not-loaded multifd data exceed
    /// ``MigrationParameters/multifdQueueBudget`` while nothing is being loaded that could make room.
    case budgetExceeded(channel: Int, device: HandlerIdentity, packetSize: Int, queued: Int, budget: Int)
    /// After the main stream's EOF the remaining multifd data did not arrive and load in time:
    /// no progress for the stall timeout, or not all within ``MigrationParameters/multifdDrainTimeout``.
    case drainTimedOut(device: HandlerIdentity?, after: Duration, reason: String)
    /// A packet after the device's config-state packet, or a second config-state packet.
    case afterConfigState(channel: Int, device: HandlerIdentity, index: UInt32, configIndex: UInt32)
    /// Every channel ended and the device still misses the packet with this index.
    case missingPacket(device: HandlerIdentity, index: UInt32)
    /// The device uses multifd but the source never sent SWITCHOVER_START.
    case switchoverStartMissing(device: HandlerIdentity)
    /// The source handler's `saveCompleteMultifd` failed, or returned without its config-state buffer.
    case deviceSave(device: HandlerIdentity, underlying: any Error)
    /// The destination handler's `loadStateBuffer` failed on the buffer with this index.
    case deviceLoad(device: HandlerIdentity, index: UInt32, underlying: any Error)
    /// The transfer was stopped because the migration failed elsewhere.
    case aborted

    public var description: String {
        switch self {
        case .channelSetup(let text):
            "multifd channel setup: \(text)"
        case .channelFailed(let channel, let offset, let underlying):
            "multifd channel \(channel) failed at byte \(offset): \(underlying)"
        case .unknownDevice(let channel, let idstr, let instance):
            "multifd channel \(channel): a device-state packet for \"\(idstr)\" instance \(instance), which has no handler here"
        case .transferOff(let channel, let device):
            "multifd channel \(channel): a device-state packet for \(device), whose multifd transfer is off here "
                + "(both ends must resolve x-migration-multifd-transfer alike)"
        case .duplicateIndex(let channel, let device, let index):
            "multifd channel \(channel): \(device) sent packet index \(index) twice"
        case .queueLimitExceeded(let channel, let device, let limit):
            "multifd channel \(channel): \(device) has more than \(limit) buffers queued for loading (multifdMaxQueuedBuffers)"
        case .budgetExceeded(let channel, let device, let size, let queued, let budget):
            "multifd channel \(channel): a \(size)-byte packet of \(device) would take the multifd data received and not yet loaded "
                + "from \(queued) bytes over the budget of \(budget) bytes (multifdQueueBudget), with nothing loading to make room"
        case .drainTimedOut(let device, let after, let reason):
            "after the main stream's EOF, \(device.map { "\($0)'s" } ?? "the") multifd data did not complete within \(after): \(reason)"
        case .afterConfigState(let channel, let device, let index, let configIndex):
            "multifd channel \(channel): \(device) sent packet index \(index) after its config-state packet \(configIndex)"
        case .missingPacket(let device, let index):
            "\(device): packet index \(index) never arrived (every multifd channel has ended)"
        case .switchoverStartMissing(let device):
            "\(device) uses multifd transfer here, but the source sent no SWITCHOVER_START "
                + "(both ends must resolve x-migration-multifd-transfer alike)"
        case .deviceSave(let device, let underlying):
            "\(device): the multifd save failed: \(underlying)"
        case .deviceLoad(let device, let index, let underlying):
            "\(device): loading multifd buffer \(index) failed: \(underlying)"
        case .aborted:
            "the multifd transfer was aborted"
        }
    }

    /// The channel the error names, if any.
    public var channel: Int? {
        switch self {
        case .channelFailed(let c, _, _), .unknownDevice(let c, _, _), .transferOff(let c, _), .duplicateIndex(let c, _, _),
            .queueLimitExceeded(let c, _, _), .afterConfigState(let c, _, _, _), .budgetExceeded(let c, _, _, _, _):
            c
        default:
            nil
        }
    }
}

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
