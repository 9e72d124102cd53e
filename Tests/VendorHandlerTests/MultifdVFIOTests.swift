import Foundation
import MLX5Handler
import MigrationCore
import MigrationStream
import Synchronization
import TestSupport
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// A guest the engines stop and resume.
final class MultifdTestVM: VMController {
    private let state: Mutex<(running: Bool, stops: Int, resumes: Int)>
    init(running: Bool) { state = Mutex((running, 0, 0)) }
    var isRunning: Bool { state.withLock { $0.running } }
    var stops: Int { state.withLock { $0.stops } }
    var resumes: Int { state.withLock { $0.resumes } }
    func stopVM() throws {
        state.withLock {
            $0.running = false
            $0.stops += 1
        }
    }
    func resumeVM() throws {
        state.withLock {
            $0.running = true
            $0.resumes += 1
        }
    }
}

/// Reads the save fd in small chunks, so one device's state spans many packets.
final class MultifdSmallChunkTuning: VFIOPCITuning {
    let size: Int
    init(size: Int = 64 << 10) { self.size = size }
    var moduleName: String { "vfio-pci (small chunks)" }
    func chunkSize(stopCopySize: UInt64) -> Int { size }
}

/// Simulated VFIO devices behind the generic handler on both sides, migrated over a
/// ``SocketPairTransport`` with multifd channels.
final class MultifdVFIOScenario: Sendable {
    let sourceRegistry = HandlerRegistry()
    let destinationRegistry = HandlerRegistry()
    let sourceDevices: [SimulatedVFIODevice]
    let destinationDevices: [SimulatedVFIODevice]
    let sourceHandlers: [VFIOPCIHandler]
    let destinationHandlers: [VFIOPCIHandler]
    let destinationConfigs: [QEMUPCIConfigState]
    let sourceVM = MultifdTestVM(running: true)
    let destinationVM = MultifdTestVM(running: false)
    static let machine = MachineConfiguration(machineType: "pc-q35-10.0")

    static func configuration(_ n: Int) -> SimulatedVFIOConfiguration {
        let name = "0000:3b:00.\(n + 1)"
        switch n % 3 {
        case 0: return .mlx5(name: name, imageSize: 192 << 10, finalImageSize: 640 << 10, seed: UInt64(n + 1))
        case 1: return .opaque(name: name, size: 700 << 10, initialBytes: 100 << 10, seed: UInt64(n + 1))
        default: return .mlx5(name: name, imageSize: 64 << 10, finalImageSize: 300 << 10, seed: UInt64(n + 1))
        }
    }

    init(
        devices: Int, mlx5Tuning: Bool = false, loadConfigAfterIterations: (source: Bool, destination: Bool) = (false, false),
        before: (source: any MigrationHandler, destination: any MigrationHandler)? = nil
    ) throws {
        if let before {
            // Registered first: its FULL section comes before the devices'.
            try sourceRegistry.register(before.source, idstr: "marker", instanceID: 0, versionID: 1)
            try destinationRegistry.register(before.destination, idstr: "marker", instanceID: 0, versionID: 1)
        }
        var sd: [SimulatedVFIODevice] = []
        var dd: [SimulatedVFIODevice] = []
        var sh: [VFIOPCIHandler] = []
        var dh: [VFIOPCIHandler] = []
        var configs: [QEMUPCIConfigState] = []
        for n in 0..<devices {
            let config = Self.configuration(n)
            let s = try SimulatedVFIODevice(config)
            let d = try SimulatedVFIODevice(config)
            // The source's default: QEMU's layout over the simulated config region; the destination
            // keeps what it receives.
            let destinationConfig = QEMUPCIConfigState(read: { [] })
            let isMLX5: Bool = if case .mlx5 = config.payload { true } else { false }
            let tuning: () -> VFIOPCITuning = { mlx5Tuning && isMLX5 ? MLX5Tuning() : MultifdSmallChunkTuning() }
            let source = VFIOPCIHandler(device: s, tuning: tuning(), loadConfigAfterIterations: loadConfigAfterIterations.source)
            let destination = VFIOPCIHandler(
                device: d, config: destinationConfig, tuning: tuning(), loadConfigAfterIterations: loadConfigAfterIterations.destination)
            try sourceRegistry.register(source, idstr: source.identity.idstr, instanceID: 0, versionID: VFIOPCIHandler.sectionVersion)
            try destinationRegistry.register(
                destination, idstr: destination.identity.idstr, instanceID: 0, versionID: VFIOPCIHandler.sectionVersion)
            sd.append(s)
            dd.append(d)
            sh.append(source)
            dh.append(destination)
            configs.append(destinationConfig)
        }
        sourceDevices = sd
        destinationDevices = dd
        sourceHandlers = sh
        destinationHandlers = dh
        destinationConfigs = configs
    }

    static func parameters(channels: Int) -> MigrationParameters { multifdTestParameters(channels: channels) }

    func migrate(
        _ parameters: MigrationParameters, destination: MigrationParameters? = nil,
        wrap: (@Sendable (Int, DescriptorConnection) -> any MigrationConnection)? = nil
    )
        async -> (source: Result<MigrationStatistics, any Error>, destination: Result<IncomingStatistics, any Error>)
    {
        await migrateOverSocketPairs(
            MigrationSource(registry: sourceRegistry, vm: sourceVM, configuration: Self.machine, parameters: parameters),
            MigrationDestination(
                registry: destinationRegistry, vm: destinationVM, configuration: Self.machine,
                parameters: destination ?? parameters),
            wrap: wrap)
    }

    /// Byte-identical device state: what each destination device absorbed is what its source
    /// produced, and the config state arrived.
    func expectIdentical(_ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for n in sourceDevices.indices {
            let saved = sourceDevices[n].savedStreamDigest
            #expect(saved != nil, "\(label): device \(n) saved nothing", sourceLocation: sourceLocation)
            #expect(
                destinationDevices[n].loadedStreamDigest == saved, "\(label): device \(n) state differs", sourceLocation: sourceLocation)
            #expect(
                destinationConfigs[n].lastLoaded?.configSpace.prefix(256).elementsEqual(sourceDevices[n].configuration.pciConfigSpace)
                    == true,
                "\(label): device \(n) config differs", sourceLocation: sourceLocation)
            #expect(destinationDevices[n].currentState == .running, sourceLocation: sourceLocation)
            #expect(sourceDevices[n].currentState == .stop, sourceLocation: sourceLocation)
        }
    }
}

func multifdFailureOf<T>(_ result: Result<T, any Error>) -> (any Error)? {
    if case .failure(let e) = result { return e }
    return nil
}

func multifdErrorIn<T>(_ result: Result<T, any Error>) -> MultifdError? {
    var next = multifdFailureOf(result)
    while let e = next {
        if let m = e as? MultifdError { return m }
        next = (e as? MigrationError)?.cause
    }
    return nil
}

@Suite struct MultifdVFIOTests {
    @Test(arguments: [1, 2, 4, 8])
    func vfioDeviceStateIsByteIdentical(channels: Int) async throws {
        for devices in 1...4 {
            let s = try MultifdVFIOScenario(devices: devices)
            let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: channels))
            let stats = try source.get()
            _ = try destination.get()
            s.expectIdentical("\(channels) channels, \(devices) devices")
            // The stop-copy data went over the channels: each handler read it in its own save thread.
            #expect(s.sourceHandlers.allSatisfy { $0.statistics.stopCopyBytes > 0 })
            #expect(stats.multifdBytes > s.sourceHandlers.reduce(0) { $0 + $1.statistics.stopCopyBytes })
            #expect(s.destinationVM.isRunning)
        }
    }

    @Test func withTheMLX5TuningToo() async throws {
        let s = try MultifdVFIOScenario(devices: 3, mlx5Tuning: true)
        let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: 2))
        _ = try source.get()
        _ = try destination.get()
        s.expectIdentical("mlx5 tuning")
    }

    @Test(arguments: [nil, 32 << 20] as [UInt64?])
    func precopyOverTheChannelsIsByteIdenticalAndAcknowledged(cap: UInt64?) async throws {
        let s = try MultifdVFIOScenario(devices: 3)
        var p = MultifdVFIOScenario.parameters(channels: 2)
        p.multifdPrecopy = true
        p.switchoverAck = true
        p.maxBandwidth = cap
        let (source, destination) = await s.migrate(p)
        let stats = try source.get()
        _ = try destination.get()
        s.expectIdentical("pre-copy over the channels")
        for h in s.sourceHandlers { #expect(h.statistics.preCopyBytes > 0 && h.statistics.initDataSent) }
        for h in s.destinationHandlers { #expect(h.statistics.acknowledged) }
        // No PART sections on the main channel for them: START, END, FULL only.
        for h in stats.handlers { #expect(h.sections == 3, "\(h.identity)") }
    }

    @Test func withoutChannelsTheClassicSectionsStillWork() async throws {
        let s = try MultifdVFIOScenario(devices: 2)
        let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: 0))
        let stats = try source.get()
        _ = try destination.get()
        s.expectIdentical("0 channels")
        #expect(stats.multifdBytes == 0)
    }

    @Test func aLostChannelFailsBothSidesAndTheSourceDevicesRunAgain() async throws {
        let s = try MultifdVFIOScenario(devices: 2)
        let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: 2)) { index, c in
            index == 2 ? FaultInjectingConnection(wrapping: c, fault: .cut(atOffset: 64 + 4096)) as any MigrationConnection : c
        }
        #expect(multifdErrorIn(source)?.channel == 1, "source: \(String(describing: source))")
        #expect(multifdErrorIn(destination)?.channel != nil, "destination: \(String(describing: destination))")
        #expect(s.sourceVM.isRunning && s.sourceVM.resumes == 1)
        #expect(!s.destinationVM.isRunning)
        for d in s.sourceDevices { #expect(d.currentState == .running) }
        for d in s.destinationDevices { #expect(d.currentState == .running && d.loadedStreamDigest == nil) }
    }

    @Test func multifdOnlyAtTheDestinationIsRefusedByTheHandler() async throws {
        let s = try MultifdVFIOScenario(devices: 1)
        var p = MultifdVFIOScenario.parameters(channels: 1)
        p.multifdTransferDefault = .off
        let (source, destination) = await s.migrate(p, destination: MultifdVFIOScenario.parameters(channels: 1))
        let error = try #require(multifdFailureOf(destination) as? MigrationError)
        #expect("\(error)".contains("multifd transfer is on"), "\(error)")
        #expect(multifdFailureOf(source) != nil && s.sourceVM.isRunning)
        #expect(s.sourceDevices[0].currentState == .running)
    }

    @Test func multifdOnlyAtTheSourceIsRefusedByTheEngine() async throws {
        let s = try MultifdVFIOScenario(devices: 1)
        var d = MultifdVFIOScenario.parameters(channels: 1)
        d.multifdTransferDefault = .off
        let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: 1), destination: d)
        guard case .transferOff? = multifdErrorIn(destination) else {
            Issue.record("destination: \(String(describing: destination))")
            return
        }
        #expect(multifdFailureOf(source) != nil && s.sourceVM.isRunning)
        #expect(s.sourceDevices[0].currentState == .running)
    }
}

/// A FULL-only handler whose one-byte section the destination loads by first waiting, up to a
/// deadline, for `until` to hold: it records whether the devices' config states were loaded by
/// the time its own section was.
final class OrderMarkerHandler: MigrationHandler {
    private let until: @Sendable () -> Bool
    private let seen = Mutex<Bool?>(nil)
    init(until: @escaping @Sendable () -> Bool = { false }) { self.until = until }
    var isLive: Bool { false }
    var hasFullState: Bool { true }
    /// Destination: whether `until` held when the marker's FULL section was loaded (nil before).
    var conditionHeldAtLoad: Bool? { seen.withLock { $0 } }

    func saveState(to writer: StreamWriter, context: SaveContext) throws { try writer.writeU8(0x4d) }

    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        _ = try reader.readU8()
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(2)
        while !until(), clock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let held = until()
        seen.withLock { $0 = held }
    }
}

/// QEMU 10.1's load-config-after-iter (`x-migration-load-config-after-iter`): the source's FULL
/// section is CONFIG_LOAD_READY alone, and the destination loads the config state (the last
/// multifd buffer) only after that FULL section, i.e. after every section before it.
@Suite struct ConfigLoadReadyTests {
    @Test func theConfigStateIsLoadedOnlyAfterTheSectionsBeforeIt() async throws {
        let box = Mutex<MultifdVFIOScenario?>(nil)
        // The marker's FULL comes before the devices'; its load waits (2 s at most) for a config
        // state to be loaded: with the ordering none can be, so it records false.
        let marker = OrderMarkerHandler {
            box.withLock { $0?.destinationConfigs.contains { $0.lastLoaded != nil } } ?? false
        }
        let s = try MultifdVFIOScenario(devices: 2, loadConfigAfterIterations: (true, true), before: (OrderMarkerHandler(), marker))
        box.withLock { $0 = s }
        let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: 2))
        _ = try source.get()
        _ = try destination.get()
        s.expectIdentical("load-config-after-iter")
        #expect(marker.conditionHeldAtLoad == false, "a config state was loaded before the FULL section that precedes the device's")
        box.withLock { $0 = nil }
    }

    @Test func withoutItTheConfigStateDoesNotWaitForTheFULLSections() async throws {
        let box = Mutex<MultifdVFIOScenario?>(nil)
        let marker = OrderMarkerHandler {
            box.withLock { s in s.map { $0.destinationConfigs.allSatisfy { $0.lastLoaded != nil } } } ?? false
        }
        let s = try MultifdVFIOScenario(devices: 2, before: (OrderMarkerHandler(), marker))
        box.withLock { $0 = s }
        let (source, destination) = await s.migrate(MultifdVFIOScenario.parameters(channels: 2))
        _ = try source.get()
        _ = try destination.get()
        s.expectIdentical("QEMU 10.0's order")
        // QEMU 10.0: the config buffers are loaded by the load threads as they come, while the
        // main channel's FULL sections are still being read.
        #expect(marker.conditionHeldAtLoad == true)
        box.withLock { $0 = nil }
    }

    @Test(arguments: [(true, false), (false, true)])
    func bothEndsMustAgree(source: Bool, destination: Bool) async throws {
        let s = try MultifdVFIOScenario(devices: 1, loadConfigAfterIterations: (source, destination))
        let (_, incoming) = await s.migrate(MultifdVFIOScenario.parameters(channels: 2))
        let error = try #require(multifdFailureOf(incoming))
        let expected = source ? "loading the config after the iterations is off here" : "no CONFIG_LOAD_READY"
        #expect("\(error)".contains(expected), "\(error)")
    }
}
