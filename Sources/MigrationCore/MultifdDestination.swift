import Logging
import MigrationStream

/// The destination's multifd transfer of one migration: a receive thread per channel that
/// parses packets and files each buffer in its device's reorder buffer, and a load thread per
/// device (started by SWITCHOVER_START) that feeds the handler's `loadStateBuffer` strictly in
/// index order, the config-state buffer last.
final class MultifdDestinationSession: Sendable {
    struct Device {
        let entry: Int
        let identity: HandlerIdentity
        /// Received, not yet loaded, by index.
        var buffers: [UInt32: [UInt8]] = [:]
        var configIndex: UInt32?
        var next: UInt32 = 0
        var done = false
        var bytes: UInt64 = 0
        var loadTime: Duration = .zero
    }

    private struct State {
        var devices: [HandlerIdentity.Key: Device]
        /// Bytes admitted and not yet loaded (packets being read, queued, being loaded).
        var queuedBytes = 0
        /// Buffers taken by a load thread and not yet loaded.
        var loading = 0
        /// Packets admitted whose data is still being read.
        var reading = 0
        /// Counts every packet filed and every buffer loaded: progress, for the drain deadline.
        var progress: UInt64 = 0
        var channelsEnded = 0
        var receiversRunning: Int
        var loadersRunning = 0
        var loadStarted = false
        var failure: MultifdError?
        var aborted = false
    }

    private let channels: [AcceptedChannel]
    private let state: Monitor<State>
    /// Every registered handler (to tell an unknown device from one whose multifd is off).
    private let known: [HandlerIdentity.Key: HandlerIdentity]
    private let maxQueued: Int
    private let maxPacketSize: Int
    private let budget: Int
    private let stallTimeout: Duration?
    private let drainTimeout: Duration?
    private let watchdog: ReceiveWatchdog?
    private let logger: Logger

    /// - Parameter devices: the registry entries whose multifd transfer is on here.
    init(
        channels: [AcceptedChannel], devices: [(entry: Int, identity: HandlerIdentity)], known: [HandlerIdentity],
        parameters: MigrationParameters, watchdog: ReceiveWatchdog? = nil, logger: Logger
    ) {
        self.channels = channels
        var map: [HandlerIdentity.Key: Device] = [:]
        for d in devices { map[d.identity.key] = Device(entry: d.entry, identity: d.identity) }
        self.state = Monitor(State(devices: map, receiversRunning: 0))
        var k: [HandlerIdentity.Key: HandlerIdentity] = [:]
        for id in known { k[id.key] = id }
        self.known = k
        self.maxQueued = parameters.multifdMaxQueuedBuffers
        self.maxPacketSize = parameters.multifdMaxPacketSize
        self.budget = parameters.multifdQueueBudget
        self.stallTimeout = parameters.stallTimeout
        self.drainTimeout = parameters.multifdDrainTimeout
        self.watchdog = watchdog
        self.logger = logger
    }

    var hasDevices: Bool { state.withLock { !$0.devices.isEmpty } }

    /// The first failure of a receive or load thread.
    var failure: MultifdError? { state.withLock { $0.failure } }

    /// Starts one receive thread per channel.
    func startReceiving() {
        state.withLock { $0.receiversRunning = channels.count }
        for channel in channels {
            startThread(name: "switchover-multifd-recv-\(channel.id)") { [self] in receiveLoop(channel) }
        }
    }

    private func record(_ error: MultifdError) {
        let first = state.update { s -> Bool in
            guard s.failure == nil, !s.aborted else { return false }
            s.failure = error
            return true
        }
        if first {
            logger.info("multifd failed: \(error)")
            // Unblock the source's writers (it fails too) and our other receivers.
            for c in channels { c.connection.shutdown() }
        }
    }

    private func receiveLoop(_ channel: AcceptedChannel) {
        let connection = channel.connection
        let source: any ByteSource = watchdog.map { CountingByteSource(connection, into: $0) } ?? connection
        let reader = StreamReader(source: source, bufferSize: 64 << 10, startOffset: MultiFDInit.encodedLength)
        defer { state.update { $0.receiversRunning -= 1 } }
        while true {
            if state.withLock({ $0.aborted || $0.failure != nil }) { return }
            do {
                // Between packets a channel may idle (the whole live phase); inside one, the
                // stall timeout applies.
                connection.setTimeouts(read: nil, write: nil)
                if try reader.isAtEnd() {
                    state.update { $0.channelsEnded += 1 }
                    return
                }
                connection.setTimeouts(read: stallTimeout, write: nil)
                let header = try reader.readMultiFDDeviceStatePacketHeader(maxPacketSize: maxPacketSize)
                let key = HandlerIdentity.Key(header.idstr, instanceID: header.instanceID)
                let isOurs = state.withLock { $0.devices[key] != nil }
                guard isOurs else {
                    if let identity = known[key] { throw MultifdError.transferOff(channel: channel.id, device: identity) }
                    throw MultifdError.unknownDevice(channel: channel.id, idstr: header.idstr, instanceID: header.instanceID)
                }
                let at = reader.offset
                let size = Int(header.nextPacketSize)  // at most maxPacketSize: checked by the reader
                try admit(size, key: key, channel: channel.id)
                let vfio = try VFIODeviceStatePacketHeader.decode(
                    try reader.readBytes(min(size, VFIODeviceStatePacketHeader.encodedLength), "a VFIO device-state packet header"),
                    offset: at)
                let data = try reader.readBytes(size - VFIODeviceStatePacketHeader.encodedLength, "a device-state buffer")
                try file(data, vfio, key: key, channel: channel.id)
            } catch let error as MultifdError {
                record(error)
                return
            } catch {
                record(.channelFailed(channel: channel.id, offset: reader.offset, underlying: error))
                return
            }
        }
    }

    /// Admits a packet of `size` bytes into the budget before its data is read. Over the
    /// budget: wait while buffers are loading (they make room), else refuse: nothing would.
    private func admit(_ size: Int, key: HandlerIdentity.Key, channel: Int) throws {
        func refusal(_ s: State) -> MultifdError {
            let identity = s.devices[key]?.identity ?? HandlerIdentity(idstr: key.idstr, instanceID: key.instanceID, versionID: 0)
            return .budgetExceeded(channel: channel, device: identity, packetSize: size, queued: s.queuedBytes, budget: budget)
        }
        let admitted = try state.wait(timeout: stallTimeout) { s -> Bool? in
            if s.aborted || s.failure != nil { throw MultifdError.aborted }
            if s.queuedBytes <= budget - size {
                s.queuedBytes += size
                s.reading += 1
                return true
            }
            // Room can come from a load (running, or about to start at SWITCHOVER_START, which
            // may still be on its way on the main channel) or from a packet being read that a
            // load thread then takes. With none of these, nothing ever makes room.
            let roomMayCome =
                s.loading > 0 || s.reading > 0 || !s.loadStarted
                || s.devices.values.contains { $0.buffers[$0.next] != nil }
            if roomMayCome { return nil }
            throw refusal(s)
        }
        guard admitted != nil else { throw state.withLock { refusal($0) } }
    }

    /// Files one buffer in its device's reorder buffer. When the device's queue is full but
    /// its next buffer is there, the load thread is draining it: wait (backpressure through
    /// the channel). Full with the next index missing is a flood: refuse.
    private func file(_ data: [UInt8], _ header: VFIODeviceStatePacketHeader, key: HandlerIdentity.Key, channel: Int) throws {
        _ = try state.wait(timeout: nil) { s -> Bool? in
            if s.aborted || s.failure != nil { throw MultifdError.aborted }
            guard var d = s.devices[key] else { return true }
            let index = header.index
            if index < d.next || d.buffers[index] != nil || d.configIndex == index {
                throw MultifdError.duplicateIndex(channel: channel, device: d.identity, index: index)
            }
            if let c = d.configIndex, index > c || header.isConfigState {
                throw MultifdError.afterConfigState(channel: channel, device: d.identity, index: index, configIndex: c)
            }
            if header.isConfigState, let highest = d.buffers.keys.max(), highest > index {
                throw MultifdError.afterConfigState(channel: channel, device: d.identity, index: highest, configIndex: index)
            }
            if d.buffers.count >= maxQueued {
                if d.buffers[d.next] != nil { return nil }
                throw MultifdError.queueLimitExceeded(channel: channel, device: d.identity, limit: maxQueued)
            }
            if header.isConfigState { d.configIndex = index }
            d.buffers[index] = data
            d.bytes += UInt64(data.count + VFIODeviceStatePacketHeader.encodedLength)
            s.devices[key] = d
            s.reading -= 1
            s.progress &+= 1
            return true
        }
        state.update { _ in }  // wake the load thread
    }

    /// SWITCHOVER_START: one load thread per device.
    func startLoading(handlers: [Int: (any MigrationHandler, LoadContext)], clock: any MigrationClock) {
        let keys = state.update { s -> [HandlerIdentity.Key] in
            guard !s.loadStarted else { return [] }
            s.loadStarted = true
            s.loadersRunning = s.devices.count
            return Array(s.devices.keys)
        }
        for (n, key) in keys.enumerated() {
            guard let entry = state.withLock({ $0.devices[key]?.entry }), let (handler, context) = handlers[entry] else {
                state.update { $0.loadersRunning -= 1 }
                continue
            }
            startThread(name: "switchover-multifd-load-\(n)") { [self] in loadLoop(key, handler, context, clock) }
        }
    }

    private func loadLoop(_ key: HandlerIdentity.Key, _ handler: any MigrationHandler, _ context: LoadContext, _ clock: any MigrationClock)
    {
        defer { state.update { $0.loadersRunning -= 1 } }
        let channelCount = channels.count
        while true {
            let next = state.wait(timeout: nil) { s -> (UInt32, [UInt8], Bool, HandlerIdentity)?? in
                if s.aborted || s.failure != nil { return .some(nil) }
                guard var d = s.devices[key] else { return .some(nil) }
                if let data = d.buffers.removeValue(forKey: d.next) {
                    // Taken is as good as loaded: the next index is the one after.
                    let item = (d.next, data, d.configIndex == d.next, d.identity)
                    d.next = d.next &+ 1
                    s.devices[key] = d
                    s.loading += 1
                    return .some(item)
                }
                if s.channelsEnded == channelCount {
                    s.failure = .missingPacket(device: d.identity, index: d.next)
                    return .some(nil)
                }
                return nil
            }
            guard let (index, data, isConfig, identity) = next ?? nil else { return }
            let t0 = clock.now
            do {
                try data.withUnsafeBytes { try handler.loadStateBuffer($0, index: index, isConfigState: isConfig, context: context) }
            } catch {
                record(.deviceLoad(device: identity, index: index, underlying: error))
                return
            }
            let spent = clock.now - t0
            let finished = state.update { s -> Bool in
                s.loading -= 1
                s.queuedBytes -= data.count + VFIODeviceStatePacketHeader.encodedLength
                s.progress &+= 1
                guard var d = s.devices[key] else { return true }
                d.loadTime += spent
                if isConfig { d.done = true }
                s.devices[key] = d
                return isConfig
            }
            if finished { return }
        }
    }

    /// At EOF: waits until every device has loaded its config-state buffer and every channel
    /// has ended. Throws the first failure.
    func finish(isCancelled: () -> Bool) throws {
        if let missing = state.withLock({ s in s.loadStarted ? nil : s.devices.values.map(\.identity).first }) {
            throw MultifdError.switchoverStartMissing(device: missing)
        }
        // The source sent all its multifd data before its EOF: what remains is in flight or
        // loading. It must progress (a packet filed or loaded) within the stall timeout and end
        // within the drain timeout; a source that keeps a channel open without sending its
        // config-state packet is cut off here.
        let start = ContinuousClock.now
        var lastProgress = state.withLock { $0.progress }
        var lastProgressAt = start
        while state.wait(timeout: .milliseconds(100), { s -> Bool? in s.failure != nil || s.loadersRunning == 0 ? true : nil }) == nil {
            if isCancelled() { throw MultifdError.aborted }
            let now = ContinuousClock.now
            let (progress, waitingFor) = state.withLock { s in
                (s.progress, s.devices.values.first { !$0.done }.map(\.identity))
            }
            if progress != lastProgress {
                lastProgress = progress
                lastProgressAt = now
            }
            if let stall = stallTimeout, now - lastProgressAt >= stall {
                throw MultifdError.drainTimedOut(
                    device: waitingFor, after: now - start,
                    reason: "nothing arrived or loaded for \(stall) (stallTimeout); a channel is open without its remaining packets")
            }
            if let limit = drainTimeout, now - start >= limit {
                throw MultifdError.drainTimedOut(
                    device: waitingFor, after: now - start, reason: "the drain timeout (multifdDrainTimeout) is \(limit)")
            }
        }
        if let failure { throw failure }
        // Every device is loaded; the source closed its channels before its EOF, so they end now.
        let ended = state.wait(timeout: stallTimeout) { s -> Bool? in
            s.failure != nil || s.receiversRunning == 0 ? true : nil
        }
        if let failure { throw failure }
        guard ended != nil else {
            throw MultifdError.channelSetup("a multifd channel is still open after the main stream's EOF")
        }
    }

    /// Waits up to `timeout` for a failure to be recorded or every receive thread to end (the
    /// main stream broke because the source failed: its channels end too, and one that ended
    /// mid-packet names the cause).
    func waitForFailure(timeout: Duration) {
        _ = state.wait(timeout: timeout) { s -> Bool? in s.failure != nil || s.receiversRunning == 0 ? true : nil }
    }

    /// After a failure: stops the receive and load threads and joins them (a load thread
    /// inside `loadStateBuffer` finishes that call first).
    func abort() {
        state.update { $0.aborted = true }
        for c in channels { c.connection.shutdown() }
        _ = state.wait(timeout: nil) { s -> Bool? in s.receiversRunning == 0 && s.loadersRunning == 0 ? true : nil }
        for c in channels { c.connection.close() }
    }

    /// After success: the channels have ended; release them.
    func close() {
        for c in channels { c.connection.close() }
    }

    /// Bytes and load time per registry entry.
    var statisticsPerEntry: [Int: (bytes: UInt64, loadTime: Duration)] {
        state.withLock { s in
            var out: [Int: (bytes: UInt64, loadTime: Duration)] = [:]
            for d in s.devices.values { out[d.entry] = (d.bytes, d.loadTime) }
            return out
        }
    }

    /// The identity named by a failure, when it names a device.
    static func device(of error: MultifdError) -> HandlerIdentity? {
        switch error {
        case .transferOff(_, let d), .duplicateIndex(_, let d, _), .queueLimitExceeded(_, let d, _), .afterConfigState(_, let d, _, _),
            .budgetExceeded(_, let d, _, _, _),
            .missingPacket(let d, _), .switchoverStartMissing(let d), .deviceSave(let d, _), .deviceLoad(let d, _, _):
            d
        default:
            nil
        }
    }
}

/// A connection whose received bytes count toward the destination's minimum receive rate.
private final class CountingByteSource: ByteSource {
    private let base: any MigrationConnection
    private let watchdog: ReceiveWatchdog

    init(_ base: any MigrationConnection, into watchdog: ReceiveWatchdog) { (self.base, self.watchdog) = (base, watchdog) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try base.read(into: buffer)
        watchdog.add(n)
        return n
    }
}
