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
