import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import TestSupport

/// A live device with multifd support: `stopCopyBytes` of deterministic data sent in
/// `chunk`-byte buffers and `configBytes` of config, either over the channels (multifd on)
/// or in its END/FULL sections (off). The destination records the buffer indices it is fed.
final class MultifdTestDevice: MigrationHandler {
    private struct State {
        var received: [UInt8] = []
        var indices: [UInt32] = []
        var config: [UInt8] = []
        var lifecycle = Lifecycle()
        var endBodies = 0
    }

    let data: [UInt8]
    let configData: [UInt8]
    let chunk: Int
    let supports: Bool
    private let state = Mutex(State())

    init(stopCopyBytes: Int = 40 << 10, chunk: Int = 4 << 10, configBytes: Int = 200, seed: Int = 1, supports: Bool = true) {
        data = (0..<stopCopyBytes).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 101 &+ $0 >> 9) }
        configData = (0..<configBytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) }
        self.chunk = chunk
        self.supports = supports
    }

    var isLive: Bool { true }
    var hasFullState: Bool { true }
    var multifdSupport: MultifdSupport { supports ? .stopCopy : [] }

    var received: [UInt8] { state.withLock { $0.received } }
    var receivedConfig: [UInt8] { state.withLock { $0.config } }
    var indices: [UInt32] { state.withLock { $0.indices } }
    var lifecycle: Lifecycle { state.withLock { $0.lifecycle } }

    func saveSetup(to writer: StreamWriter, context: SaveContext) throws { try writeFramed(writer, []) }

    func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        try writeFramed(writer, context.multifdTransfer ? [] : data)
    }

    func saveState(to writer: StreamWriter, context: SaveContext) throws {
        try writeFramed(writer, context.multifdTransfer ? [] : configData)
    }

    func saveCompleteMultifd(to sender: DeviceStateSender, context: SaveContext) throws {
        var at = 0
        while at < data.count {
            let n = min(chunk, data.count - at)
            try data[at..<(at + n)].withUnsafeBytes { try sender.send($0, isConfigState: false) }
            at += n
        }
        try configData.withUnsafeBytes { try sender.send($0, isConfigState: true) }
    }

    func saveCleanup(succeeded: Bool) { state.withLock { $0.lifecycle.saveCleanups.append(succeeded) } }

    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        let body = try readFramed(reader)
        state.withLock { s in
            switch header.kind {
            case .end:
                s.received += body
                s.endBodies += 1
            case .full: if !body.isEmpty { s.config = body }
            default: break
            }
        }
    }

    func loadStateBuffer(_ buffer: UnsafeRawBufferPointer, index: UInt32, isConfigState: Bool, context: LoadContext) throws {
        state.withLock { s in
            s.indices.append(index)
            if isConfigState { s.config = Array(buffer) } else { s.received += buffer }
        }
    }

    func loadCleanup(succeeded: Bool) { state.withLock { $0.lifecycle.loadCleanups.append(succeeded) } }
}

/// Source and destination with RAM, `devices` multifd devices and a FULL-only handler,
/// migrating over a ``SocketPairTransport`` (main connection + channels).
final class MultifdScenario: Sendable {
    let log = EventLog()
    let sourceRegistry = HandlerRegistry()
    let destinationRegistry = HandlerRegistry()
    let sourceRAM = RAMHandler(pages: 32)
    let destinationRAM = RAMHandler(pages: 32, seed: 200)
    let sourceDevices: [MultifdTestDevice]
    let destinationDevices: [MultifdTestDevice]
    let sourceVM: TestVM
    let destinationVM: TestVM

    static func deviceID(_ n: Int) -> String { "0000:00:0\(n + 4).0/vfio" }

    init(devices: Int, stopCopyBytes: Int = 40 << 10, chunk: Int = 4 << 10, destinationSupports: Bool = true) throws {
        let ram = sourceRAM
        sourceVM = TestVM(
            name: "source", running: true, log: log,
            onStop: { ram.setGuestRunning(false) }, onResume: { ram.setGuestRunning(true) })
        destinationVM = TestVM(name: "destination", running: false, log: log)
        sourceDevices = (0..<devices).map { MultifdTestDevice(stopCopyBytes: stopCopyBytes + $0 * 1000, chunk: chunk, seed: $0 + 1) }
        destinationDevices = (0..<devices).map { _ in MultifdTestDevice(stopCopyBytes: 0, supports: destinationSupports) }
        try sourceRegistry.register(sourceRAM, idstr: "ram", instanceID: 0, versionID: 4)
        try destinationRegistry.register(destinationRAM, idstr: "ram", instanceID: 0, versionID: 4)
        for n in 0..<devices {
            try sourceRegistry.register(sourceDevices[n], idstr: Self.deviceID(n), versionID: 1)
            try destinationRegistry.register(destinationDevices[n], idstr: Self.deviceID(n), versionID: 1)
        }
    }

    static func parameters(channels: Int) -> MigrationParameters { multifdTestParameters(channels: channels) }

    /// Migrates through a socketpair transport; `wrap` may wrap the source end of the
    /// `index`-th connection (0 = main, 1… = channels 0…).
    func migrate(
        _ parameters: MigrationParameters, destination: MigrationParameters? = nil,
        wrap: (@Sendable (Int, DescriptorConnection) -> any MigrationConnection)? = nil
    )
        async -> (source: Result<MigrationStatistics, any Error>, destination: Result<IncomingStatistics, any Error>)
    {
        await migrateOverSocketPairs(
            MigrationSource(registry: sourceRegistry, vm: sourceVM, configuration: machine, parameters: parameters),
            MigrationDestination(
                registry: destinationRegistry, vm: destinationVM, configuration: machine,
                parameters: destination ?? parameters),
            wrap: wrap)
    }

    func expectIdentical() -> Bool {
        guard destinationRAM.snapshot == sourceRAM.snapshot else { return false }
        guard sourceDevices.count == destinationDevices.count else { return false }
        for (s, d) in zip(sourceDevices, destinationDevices) {
            guard d.received == s.data, d.receivedConfig == s.configData else { return false }
        }
        return true
    }

    var sourceIntact: Bool {
        sourceVM.isRunning && sourceVM.stops == sourceVM.resumes && sourceRAM.lifecycle.saveCleanups == [false]
            && sourceDevices.allSatisfy { $0.lifecycle.saveCleanups == [false] }
    }

    var destinationCleanedUp: Bool {
        !destinationVM.isRunning && destinationRAM.lifecycle.loadCleanups == [false]
            && destinationDevices.allSatisfy { $0.lifecycle.loadCleanups == [false] }
    }
}

/// Rewrites the packets of one multifd channel (the engine writes the 64-byte channel header,
/// then each packet, in one `write` each): drop, duplicate or hold back a packet by index.
final class PacketFilterConnection: MigrationConnection {
    enum Action: Sendable {
        /// Never send the packet with this index.
        case drop(UInt32)
        /// Send the packet with this index twice.
        case duplicate(UInt32)
        /// Hold the packet with this index back until the one with `after` has been sent.
        case delay(UInt32, after: UInt32)
    }

    private let base: any MigrationConnection
    private let actions: [Action]
    private let held = Mutex<[UInt32: [UInt8]]>([:])
    private let writes = Mutex(0)

    init(_ base: any MigrationConnection, _ actions: [Action]) {
        self.base = base
        self.actions = actions
    }

    var supportsReturnPath: Bool { base.supportsReturnPath }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try base.read(into: buffer) }
    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        let first = writes.withLock { w -> Bool in
            defer { w += 1 }
            return w == 0
        }
        let offset = MultiFDDeviceStatePacketHeader.encodedLength + 4
        guard !first, bytes.count >= offset + 4 else { return try base.write(bytes) }
        let index = bytes[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        var out: [[UInt8]] = [Array(bytes)]
        for action in actions {
            switch action {
            case .drop(let i) where i == index: out = []
            case .duplicate(let i) where i == index: out = [Array(bytes), Array(bytes)]
            case .delay(let i, _) where i == index:
                held.withLock { $0[i] = Array(bytes) }
                out = []
            case .delay(let i, let after) where after == index:
                if let p = held.withLock({ $0.removeValue(forKey: i) }) { out.append(p) }
            default: break
            }
        }
        for packet in out { try packet.withUnsafeBytes { try base.write($0) } }
    }
}
