import Logging
import MigrationStream
import Synchronization

/// The source's multifd channels: one writer thread per channel, each owning its connection
/// and taking whole packets from its own bounded queue. Producers (the per-device save
/// threads) fill the queues round-robin, skipping full ones, and wait when every queue is
/// full: memory is bounded by channels × ``MigrationParameters/multifdSendQueueDepth`` ×
/// packet size, whatever the size of the device state.
final class MultifdSender: Sendable {
    private struct State {
        var queues: [[[UInt8]]]
        var next = 0
        var closing = false
        var aborted = false
        var failure: MultifdError?
        var writersRunning: Int
        var offsets: [Int]
        var packets = 0
        var bytes: UInt64 = 0
    }

    let connections: [any MigrationConnection]
    private let depth: Int
    private let state: Monitor<State>

    init(connections: [any MigrationConnection], queueDepth: Int) {
        self.connections = connections
        self.depth = max(1, queueDepth)
        self.state = Monitor(
            State(
                queues: Array(repeating: [], count: connections.count), writersRunning: connections.count,
                offsets: Array(repeating: MultiFDInit.encodedLength, count: connections.count)))
        for (id, connection) in connections.enumerated() {
            startThread(name: "switchover-multifd-send-\(id)") { [self] in writerLoop(id, connection) }
        }
    }

    var channelCount: Int { connections.count }

    /// Bytes of packets written on every channel (headers included).
    var bytesWritten: UInt64 { state.withLock { $0.bytes } }
    var packetsWritten: Int { state.withLock { $0.packets } }

    /// Whether `failure` is a channel seeing the peer close or the engine shut it down: what
    /// every channel sees once another one failed.
    static func isConsequence(_ failure: MultifdError) -> Bool {
        guard case .channelFailed(_, _, let underlying) = failure, let transport = underlying as? TransportError else { return false }
        switch transport {
        case .connectionClosed, .shutDown: return true
        default: return false
        }
    }

    /// The first channel failure, if any (see ``isConsequence(_:)``).
    var failure: MultifdError? { state.withLock { $0.failure } }

    /// Waits up to `timeout` for a channel failure to be recorded (or every writer to stop).
    func waitForFailure(timeout: Duration) {
        _ = state.wait(timeout: timeout) { s -> Bool? in s.failure != nil || s.writersRunning == 0 ? true : nil }
    }

    /// Queues one whole packet; waits while every channel's queue is full. Throws the
    /// channel's failure, or ``MultifdError/aborted``.
    func enqueue(_ packet: [UInt8]) throws {
        let n = connections.count
        _ = try state.wait(timeout: nil) { s -> Bool? in
            if let failure = s.failure { throw failure }
            if s.aborted || s.closing { throw MultifdError.aborted }
            for k in 0..<n {
                let c = (s.next + k) % n
                if s.queues[c].count < depth {
                    s.queues[c].append(packet)
                    s.next = (c + 1) % n
                    return true
                }
            }
            return nil
        }
        state.update { _ in }  // wake the writers
    }

    private func writerLoop(_ id: Int, _ connection: any MigrationConnection) {
        while true {
            let packet = state.wait(timeout: nil) { s -> [UInt8]?? in
                if s.aborted || s.failure != nil { return .some(nil) }
                if !s.queues[id].isEmpty { return .some(s.queues[id].removeFirst()) }
                if s.closing { return .some(nil) }
                return nil
            }
            guard let packet = packet ?? nil else { break }
            state.update { _ in }  // a queue has room: wake the producers
            do {
                // One write per packet (tests that filter packets rely on it).
                try packet.withUnsafeBytes { try connection.write($0) }
                state.withLock { s in
                    s.offsets[id] += packet.count
                    s.packets += 1
                    s.bytes += UInt64(packet.count)
                }
            } catch {
                state.update { s in
                    // After abort() the failure is our own shutdown, not the channel's.
                    // The first failure wins, unless it was only the peer closing or our own
                    // shutdown (the consequence of another channel's failure, which a busy
                    // writer may record later): then the cause replaces it.
                    let failure = MultifdError.channelFailed(channel: id, offset: s.offsets[id], underlying: error)
                    if !s.aborted, s.failure.map({ Self.isConsequence($0) && !Self.isConsequence(failure) }) ?? true {
                        s.failure = failure
                    }
                }
                // The other channels stop too; the migration fails.
                for c in connections { c.shutdown() }
                break
            }
        }
        state.update { $0.writersRunning -= 1 }
    }

    /// No more packets: waits until every queue is written, then closes the channels (the
    /// destination sees each end at a packet boundary). Throws the first channel failure.
    func finish() throws {
        state.update { $0.closing = true }
        let failure = state.wait(timeout: nil) { s -> MultifdError?? in s.writersRunning == 0 ? .some(s.failure) : nil } ?? nil
        for c in connections {
            if failure != nil { c.shutdown() }
            c.close()
        }
        if let failure { throw failure }
    }

    /// Stops everything now: queued packets are dropped, blocked writes and producers are
    /// woken, the writer threads are joined and the channels closed.
    func abort() {
        state.update { $0.aborted = true }
        for c in connections { c.shutdown() }
        _ = state.wait(timeout: nil) { s -> Bool? in s.writersRunning == 0 ? true : nil }
        for c in connections { c.close() }
    }
}

/// What one device's save thread sends through: assigns indices, builds QEMU's packets
/// (276-byte multifd header, 12-byte VFIO header, the buffer) and queues them.
final class MultifdDeviceSender: DeviceStateSender {
    private struct State {
        var next: UInt32 = 0
        var configSent = false
        var bytes: UInt64 = 0
    }

    let identity: HandlerIdentity
    private let sender: MultifdSender
    private let state = Mutex(State())

    init(identity: HandlerIdentity, sender: MultifdSender) { (self.identity, self.sender) = (identity, sender) }

    var configSent: Bool { state.withLock { $0.configSent } }
    var bytesSent: UInt64 { state.withLock { $0.bytes } }
    var packetsSent: UInt32 { state.withLock { $0.next } }

    func send(_ buffer: UnsafeRawBufferPointer, isConfigState: Bool) throws {
        let size = buffer.count + VFIODeviceStatePacketHeader.encodedLength
        guard size <= Int(UInt32.max) else {
            throw MultifdError.deviceSave(
                device: identity,
                underlying: StreamError.lengthTooLarge(
                    offset: 0, field: "multifd device-state buffer", length: UInt64(buffer.count), limit: UInt64(UInt32.max) - 12))
        }
        let index = try state.withLock { s -> UInt32 in
            guard !s.configSent else {
                throw MultifdError.deviceSave(device: identity, underlying: MultifdSendError.afterConfigState)
            }
            // 0xffffffff is not a valid index.
            guard s.next < UInt32.max - 1 else {
                throw MultifdError.deviceSave(device: identity, underlying: MultifdSendError.tooManyPackets)
            }
            defer { s.next += 1 }
            if isConfigState { s.configSent = true }
            return s.next
        }
        var packet: [UInt8] = []
        packet.reserveCapacity(MultiFDDeviceStatePacketHeader.encodedLength + size)
        packet += try MultiFDDeviceStatePacketHeader(
            idstr: identity.idstr, instanceID: identity.instanceID,
            nextPacketSize: UInt32(size)
        ).encoded()
        packet += VFIODeviceStatePacketHeader(index: index, flags: isConfigState ? VFIODeviceStatePacketHeader.flagConfigState : 0)
            .encoded()
        packet.append(contentsOf: buffer)
        try sender.enqueue(packet)
        state.withLock { $0.bytes += UInt64(size) }
    }
}

/// Misuse of a ``DeviceStateSender``.
enum MultifdSendError: Error, CustomStringConvertible {
    case afterConfigState
    case tooManyPackets
    case noConfigState

    var description: String {
        switch self {
        case .afterConfigState: "a buffer was sent after the config-state buffer, which must be the last"
        case .tooManyPackets: "more than 2^32-2 buffers"
        case .noConfigState: "saveCompleteMultifd returned without sending its config-state buffer"
        }
    }
}

/// The source's multifd transfer of one migration: the channels and the per-device save
/// threads of the stop-copy phase.
final class MultifdSourceSession: Sendable {
    private struct Device {
        let entry: Int
        let sender: MultifdDeviceSender
        var running = true
        var error: MultifdError?
    }

    let sender: MultifdSender
    private let devices = Monitor<[Device]>([])
    /// One sender per device for the whole migration: pre-copy and stop-copy buffers share
    /// one index sequence.
    private let deviceSenders = Mutex<[Int: MultifdDeviceSender]>([:])
    private let precopy = Monitor(PrecopyState())

    private struct PrecopyState {
        var stop = false
        var running = 0
        var failure: (identity: HandlerIdentity, error: any Error)?
    }

    init(connections: [any MigrationConnection], queueDepth: Int) {
        sender = MultifdSender(connections: connections, queueDepth: queueDepth)
    }

    private func deviceSender(_ entry: Int, _ identity: HandlerIdentity) -> MultifdDeviceSender {
        deviceSenders.withLock { m in
            if let s = m[entry] { return s }
            let s = MultifdDeviceSender(identity: identity, sender: sender)
            m[entry] = s
            return s
        }
    }

    // MARK: Pre-copy over the channels (multifdPrecopy)

    /// Starts a pre-copy thread per device. With a bandwidth cap, each device gets an equal
    /// share of `windowBudget` bytes per 100 ms window (the channels' own budget, beside the
    /// main channel's).
    func startPrecopy(
        _ list: [(entry: Int, identity: HandlerIdentity, handler: any MigrationHandler, context: SaveContext)],
        windowBudget: Int?, clock: any MigrationClock
    ) {
        guard !list.isEmpty else { return }
        let share = windowBudget.map { max(1, $0 / list.count) }
        precopy.withLock { $0.running = list.count }
        for (n, item) in list.enumerated() {
            let ds = deviceSender(item.entry, item.identity)
            let handler = item.handler
            let context = item.context
            let identity = item.identity
            startThread(name: "switchover-multifd-precopy-\(n)") { [precopy] in
                let window = MigrationParameters.rateLimitWindow
                var windowStart = clock.now
                var spent = 0
                do {
                    while !precopy.withLock({ $0.stop }) {
                        let now = clock.now
                        if now - windowStart >= window {
                            windowStart = now
                            spent = 0
                        }
                        if let share, spent >= share {
                            clock.sleep(until: windowStart + window)
                            continue
                        }
                        let before = ds.bytesSent
                        let result = try handler.saveIterateMultifd(to: ds, budget: share.map { $0 - spent } ?? Int.max, context: context)
                        spent += Int(ds.bytesSent - before)
                        if result == .done { clock.sleep(until: min(windowStart + window, clock.now + .milliseconds(5))) }
                    }
                } catch {
                    precopy.update { s in if s.failure == nil { s.failure = (identity, error) } }
                }
                precopy.update { $0.running -= 1 }
            }
        }
    }

    /// A pre-copy thread's failure, if any.
    var precopyFailure: (identity: HandlerIdentity, error: any Error)? { precopy.withLock { $0.failure } }

    /// Device-state bytes sent so far (pre-copy progress for the stall check).
    var bytesSentSoFar: UInt64 { sender.bytesWritten }

    /// Stops the pre-copy threads and waits for them (before the guest stops).
    func stopPrecopy() {
        precopy.update { $0.stop = true }
        _ = precopy.wait(timeout: nil) { s -> Bool? in s.running == 0 ? true : nil }
    }

    // MARK: Stop-copy

    /// Starts `saveCompleteMultifd` of each handler on a thread of its own.
    func startSaves(_ list: [(entry: Int, identity: HandlerIdentity, handler: any MigrationHandler, context: SaveContext)]) {
        for item in list {
            let ds = deviceSender(item.entry, item.identity)
            let slot = devices.withLock { d -> Int in
                d.append(Device(entry: item.entry, sender: ds))
                return d.count - 1
            }
            let handler = item.handler
            let context = item.context
            let identity = item.identity
            startThread(name: "switchover-multifd-save-\(slot)") { [devices] in
                var failure: MultifdError?
                do {
                    try handler.saveCompleteMultifd(to: ds, context: context)
                    if !ds.configSent { failure = .deviceSave(device: identity, underlying: MultifdSendError.noConfigState) }
                } catch let error as MultifdError {
                    failure = error
                } catch {
                    failure = .deviceSave(device: identity, underlying: error)
                }
                devices.update { d in
                    d[slot].running = false
                    d[slot].error = failure
                }
            }
        }
    }

    /// Waits for every save thread, then for the channels to drain, and closes them.
    /// Throws the root cause: a channel's failure first, else the first device's.
    func finish(isCancelled: () -> Bool) throws {
        var errors: [MultifdError] = []
        while true {
            if let done = devices.wait(
                timeout: .milliseconds(100),
                { d -> [MultifdError]? in
                    d.contains(where: \.running) ? nil : d.compactMap(\.error)
                })
            {
                errors = done
                break
            }
            // A cancel shuts only the main connection; stop the save threads too.
            if isCancelled() { throw MultifdError.aborted }
        }
        if let channel = sender.failure {
            sender.abort()
            throw channel
        }
        if let first = errors.first {
            sender.abort()
            throw first
        }
        try sender.finish()
    }

    /// After a failure elsewhere: stops the channels and joins the pre-copy and save threads.
    func abort() {
        precopy.update { $0.stop = true }
        sender.abort()
        _ = precopy.wait(timeout: nil) { s -> Bool? in s.running == 0 ? true : nil }
        _ = devices.wait(timeout: nil) { d -> Bool? in d.contains(where: \.running) ? nil : true }
    }

    /// Device-state bytes sent per registry entry (packet buffers, without the 276-byte headers).
    var bytesPerEntry: [Int: UInt64] {
        deviceSenders.withLock { m in m.mapValues(\.bytesSent) }
    }

    /// The identity of the first failed device, for the error report.
    var failedDevice: HandlerIdentity? {
        devices.withLock { d in d.first(where: { $0.error != nil }).map(\.sender.identity) }
    }
}
