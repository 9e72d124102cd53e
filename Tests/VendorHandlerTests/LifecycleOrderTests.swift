import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import SystemPackage
import TestSupport
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// A guest whose vCPU stops and starts take a number in the simulator's order.
final class SequencedVM: VMController {
    private let state: Mutex<(running: Bool, stops: [UInt64], starts: [UInt64])>
    init(running: Bool) { state = Mutex((running, [], [])) }
    var isRunning: Bool { state.withLock { $0.running } }
    var stops: [UInt64] { state.withLock { $0.stops } }
    var starts: [UInt64] { state.withLock { $0.starts } }
    func stopVM() throws {
        state.withLock {
            $0.running = false
            $0.stops.append(SimulatedVFIOSequence.next())
        }
    }
    func resumeVM() throws {
        state.withLock {
            $0.running = true
            $0.starts.append(SimulatedVFIOSequence.next())
        }
    }
}

/// Stands in for RAM, registered first as the example VM registers it: a live handler whose
/// END section (the final pass) takes a number in the simulator's order.
final class FinalPassMarker: MigrationHandler {
    private let stamps = Mutex<[UInt64]>([])
    var isLive: Bool { true }
    var hasFullState: Bool { false }
    /// The number taken by each END section written.
    var finalPasses: [UInt64] { stamps.withLock { $0 } }

    func saveSetup(to writer: StreamWriter, context: SaveContext) throws { try writer.writeBytes([1]) }
    func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult {
        try writer.writeBytes([2])
        return .done
    }
    func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        stamps.withLock { $0.append(SimulatedVFIOSequence.next()) }
        try writer.writeBytes([3])
    }
    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        _ = try reader.readBytes(1, "the marker byte")
    }
}

/// `n` simulated VFIO devices behind the generic handler, after a marker handler, on both sides.
final class LifecycleScenario: Sendable {
    let sourceRegistry = HandlerRegistry()
    let destinationRegistry = HandlerRegistry()
    let marker = FinalPassMarker()
    let sourceDevices: [SimulatedVFIODevice]
    let destinationDevices: [SimulatedVFIODevice]
    let sourceVM = SequencedVM(running: true)
    let destinationVM = SequencedVM(running: false)
    static let machine = MachineConfiguration(machineType: "pc-q35-10.0")

    /// - Parameter flags: each device's migration flags (the count is the device count).
    init(flags: [VFIOMigrationFlags]) throws {
        try sourceRegistry.register(marker, idstr: "ram", instanceID: 0, versionID: 4)
        try destinationRegistry.register(FinalPassMarker(), idstr: "ram", instanceID: 0, versionID: 4)
        var sd: [SimulatedVFIODevice] = []
        var dd: [SimulatedVFIODevice] = []
        for (n, f) in flags.enumerated() {
            let config = SimulatedVFIOConfiguration.opaque(
                name: "0000:3b:00.\(n + 1)", migration: f, size: 96 << 10,
                initialBytes: f.contains(.preCopy) ? 16 << 10 : 0, seed: UInt64(n + 1))
            let s = try SimulatedVFIODevice(config)
            let d = try SimulatedVFIODevice(config)
            let source = VFIOPCIHandler(device: s, tuning: MultifdSmallChunkTuning(size: 16 << 10))
            let destination = VFIOPCIHandler(
                device: d, config: QEMUPCIConfigState(read: { [] }),
                tuning: MultifdSmallChunkTuning(size: 16 << 10))
            try sourceRegistry.register(source, idstr: source.identity.idstr, instanceID: 0, versionID: 1)
            try destinationRegistry.register(destination, idstr: destination.identity.idstr, instanceID: 0, versionID: 1)
            sd.append(s)
            dd.append(d)
        }
        sourceDevices = sd
        destinationDevices = dd
    }

    convenience init(devices: Int) throws {
        try self.init(flags: Array(repeating: [.stopCopy, .p2p, .preCopy], count: devices))
    }

    let destinationRunState = Mutex<VMRunState?>(nil)

    func migrate(_ parameters: MigrationParameters)
        async -> (source: Result<MigrationStatistics, any Error>, destination: Result<IncomingStatistics, any Error>)
    {
        let destination = MigrationDestination(
            registry: destinationRegistry, vm: destinationVM, configuration: Self.machine,
            parameters: parameters)
        destinationRunState.withLock { $0 = destination.runState }
        return await migrateOverSocketPairs(
            MigrationSource(registry: sourceRegistry, vm: sourceVM, configuration: Self.machine, parameters: parameters),
            destination)
    }

    var sourceMarkerPasses: [UInt64] { marker.finalPasses }

    static func transitions(_ devices: [SimulatedVFIODevice]) -> [SimulatedVFIOTransition] {
        devices.flatMap(\.recordedTransitions).sorted { $0.sequence < $1.sequence }
    }
}

func lifecycleParameters(multifd: Bool) -> MigrationParameters {
    var p = multifdTestParameters(channels: multifd ? 2 : 0)
    p.downtimeLimit = .seconds(30)
    return p
}

extension Array where Element == SimulatedVFIOTransition {
    /// The numbers of the arcs (not resets) into any of `states`.
    func into(_ states: Set<VFIODeviceState>) -> [UInt64] { filter { !$0.isReset && states.contains($0.to) }.map(\.sequence) }
    func after(_ sequence: UInt64) -> [SimulatedVFIOTransition] { filter { $0.sequence > sequence } }
}

@Suite struct LifecycleOrderTests {
    static let cases: [(Int, Bool)] = [1, 2, 3, 4].flatMap { n in [(n, false), (n, true)] }

    @Test(arguments: cases)
    func devicesStopBehindTheP2PBarrierBeforeRAMsFinalPassAndStartBehindItOnTheDestination(devices: Int, multifd: Bool) async throws {
        let scenario = try LifecycleScenario(devices: devices)
        let (s, d) = await scenario.migrate(lifecycleParameters(multifd: multifd))
        _ = try s.get()
        _ = try d.get()
        let label = "\(devices) devices, multifd \(multifd)"

        // Source: vCPUs stop, then every device enters a P2P state, then any enters STOP_COPY,
        // all before RAM's final pass.
        let source = LifecycleScenario.transitions(scenario.sourceDevices)
        let vcpuStop = try #require(scenario.sourceVM.stops.first, "\(label): the vCPUs never stopped")
        let stopCopy = source.into([.stopCopy])
        let p2p = source.into([.preCopyP2P, .runningP2P])
        #expect(stopCopy.count == devices, "\(label): \(source)")
        #expect(p2p.count == devices, "\(label): \(source)")
        let firstStopCopy = try #require(stopCopy.min())
        #expect(p2p.allSatisfy { $0 > vcpuStop && $0 < firstStopCopy }, "\(label): P2P after a STOP_COPY: \(source)")
        let finalPass = try #require(scenario.marker.finalPasses.first)
        #expect(stopCopy.allSatisfy { $0 < finalPass }, "\(label): a device entered STOP_COPY after RAM's final pass: \(source)")
        #expect(scenario.sourceDevices.allSatisfy { $0.currentState == .stop })

        // Destination: after the load (RESUMING → STOP) every device reaches RUNNING_P2P
        // before any runs, and the vCPUs start last.
        let destination = LifecycleScenario.transitions(scenario.destinationDevices)
        let leftResuming = try #require(destination.filter { $0.from == .resuming }.map(\.sequence).max())
        let running = destination.after(leftResuming).into([.running])
        let runningP2P = destination.after(leftResuming).into([.runningP2P])
        #expect(running.count == devices && runningP2P.count == devices, "\(label): \(destination)")
        let firstRunning = try #require(running.min())
        #expect(runningP2P.allSatisfy { $0 < firstRunning }, "\(label): RUNNING before every RUNNING_P2P: \(destination)")
        let vcpuStart = try #require(scenario.destinationVM.starts.first)
        #expect(running.allSatisfy { $0 < vcpuStart }, "\(label): the vCPUs started before a device ran")
        #expect(scenario.destinationDevices.allSatisfy { $0.currentState == .running })
        for n in scenario.sourceDevices.indices {
            #expect(
                scenario.destinationDevices[n].loadedStreamDigest == scenario.sourceDevices[n].savedStreamDigest, "\(label): device \(n)")
        }
    }

    @Test(arguments: cases)
    func withResumeOffNothingRunsUntilTheVMMStartsTheGuest(devices: Int, multifd: Bool) async throws {
        let scenario = try LifecycleScenario(devices: devices)
        var parameters = lifecycleParameters(multifd: multifd)
        parameters.resumeOnCompletion = false
        let (s, d) = await scenario.migrate(parameters)
        _ = try s.get()
        _ = try d.get()
        let loaded = LifecycleScenario.transitions(scenario.destinationDevices)
        let leftResuming = try #require(loaded.filter { $0.from == .resuming }.map(\.sequence).max())
        #expect(loaded.after(leftResuming).into([.running, .runningP2P]).isEmpty, "\(loaded)")
        #expect(scenario.destinationDevices.allSatisfy { $0.currentState == .stop })
        #expect(!scenario.destinationVM.isRunning)

        // The VMM starts the guest through the destination's run state: the same barrier.
        let runState = try #require(scenario.destinationRunState.withLock { $0 })
        let before = SimulatedVFIOSequence.next()
        try runState.start()
        let started = LifecycleScenario.transitions(scenario.destinationDevices).after(before)
        let running = started.into([.running])
        let runningP2P = started.into([.runningP2P])
        #expect(running.count == devices && runningP2P.count == devices, "\(started)")
        #expect(runningP2P.max() ?? .max < running.min() ?? 0, "\(started)")
        #expect(scenario.destinationDevices.allSatisfy { $0.currentState == .running })
        #expect(scenario.destinationVM.isRunning)
    }

    @Test(arguments: [false, true])
    func aFailureAfterTheStopStartsTheSourceDevicesBehindTheBarrier(multifd: Bool) async throws {
        let scenario = try LifecycleScenario(devices: 3)
        // The destination refuses the last device's state when it leaves RESUMING.
        scenario.destinationDevices[2].injectFailure(.init(from: .resuming, to: .stop))
        let (s, d) = await scenario.migrate(lifecycleParameters(multifd: multifd))
        #expect(throws: (any Error).self) { try s.get() }
        #expect(throws: (any Error).self) { try d.get() }
        let source = LifecycleScenario.transitions(scenario.sourceDevices)
        let lastStopCopy = try #require(source.into([.stopCopy]).max())
        let back = source.after(lastStopCopy)
        let runningP2P = back.into([.runningP2P])
        let running = back.into([.running])
        #expect(runningP2P.count == 3 && running.count == 3, "\(back)")
        #expect(runningP2P.max() ?? .max < running.min() ?? 0, "RUNNING before every RUNNING_P2P: \(back)")
        #expect(scenario.sourceDevices.allSatisfy { $0.currentState == .running })
        #expect(scenario.sourceVM.isRunning)
        let vcpuStart = try #require(scenario.sourceVM.starts.last)
        #expect(running.allSatisfy { $0 < vcpuStart })
    }

    @Test func aDeviceThatCannotQuiesceFailsTheSwitchoverAndEveryDeviceRunsAgain() async throws {
        let scenario = try LifecycleScenario(devices: 3)
        // The first device told (the last registered: a stop goes in reverse order) passes the
        // barrier, the second cannot.
        scenario.sourceDevices[1].injectFailure(.init(from: .preCopy, to: .preCopyP2P))
        let (s, d) = await scenario.migrate(lifecycleParameters(multifd: false))
        let error = try #require(multifdFailureOf(s))
        guard let failure = error as? MigrationError, failure.code == .vmControlFailed else {
            Issue.record("not a complete error: \(error)")
            return
        }
        #expect(failure.handler?.idstr == "0000:3b:00.2/vfio", "\(error)")
        #expect(multifdFailureOf(d) != nil)
        let source = LifecycleScenario.transitions(scenario.sourceDevices)
        #expect(source.into([.stopCopy]).isEmpty, "a device stopped although the barrier failed: \(source)")
        #expect(scenario.sourceMarkerPasses.isEmpty, "RAM's final pass ran")
        #expect(scenario.sourceDevices.allSatisfy { $0.currentState == .running }, "\(source)")
        #expect(scenario.sourceVM.isRunning)
    }

    @Test func aDeviceThatCannotRunAgainIsResetAndTheErrorSaysSo() async throws {
        let scenario = try LifecycleScenario(devices: 2)
        scenario.destinationDevices[1].injectFailure(.init(from: .runningP2P, to: .running))
        let (s, d) = await scenario.migrate(lifecycleParameters(multifd: false))
        let error = try #require(multifdFailureOf(d))
        #expect("\(error)".contains("the device was reset"), "\(error)")
        #expect("\(error)".contains("0000:3b:00.2"), "\(error)")
        #expect(scenario.destinationDevices[1].recordedTransitions.contains { $0.isReset })
        #expect(!scenario.destinationVM.isRunning, "the destination guest started without its device")
        // The source hears SHUT(1) and keeps its guest.
        #expect(multifdFailureOf(s) != nil)
        #expect(scenario.sourceVM.isRunning)
        #expect(scenario.sourceDevices.allSatisfy { $0.currentState == .running })
    }

    @Test func severalDevicesWithoutP2PAreRefusedAtPrepareUnlessAllowed() async throws {
        let flags: [VFIOMigrationFlags] = [[.stopCopy, .p2p, .preCopy], [.stopCopy, .preCopy]]
        let refused = try LifecycleScenario(flags: flags)
        let (s, _) = await refused.migrate(lifecycleParameters(multifd: false))
        let error = try #require(multifdFailureOf(s))
        guard (error as? MigrationError)?.code == .handlerFailed else {
            Issue.record("not a setup error: \(error)")
            return
        }
        #expect("\(error)".contains("0000:3b:00.2 lacks P2P"), "\(error)")
        #expect(refused.sourceDevices.allSatisfy { $0.currentState == .running && $0.recordedTransitions.isEmpty })
        #expect(refused.sourceVM.isRunning)

        let allowed = try LifecycleScenario(flags: flags)
        var parameters = lifecycleParameters(multifd: false)
        parameters.allowDevicesWithoutP2P = true
        let (s2, d2) = await allowed.migrate(parameters)
        _ = try s2.get()
        _ = try d2.get()
        // The device without P2P stops straight from PRE_COPY; the other passes the barrier.
        #expect(allowed.sourceDevices[1].recordedTransitions.map(\.to) == [.preCopy, .stopCopy, .stop])
        #expect(allowed.sourceDevices[0].recordedTransitions.into([.preCopyP2P]).count == 1)
    }

    @Test func oneDeviceWithoutP2PMigratesAlone() async throws {
        let scenario = try LifecycleScenario(flags: [[.stopCopy, .preCopy]])
        let (s, d) = await scenario.migrate(lifecycleParameters(multifd: false))
        _ = try s.get()
        _ = try d.get()
        #expect(scenario.destinationDevices[0].currentState == .running)
    }

    @Test func theVMMsPauseStopsTheDevicesAndItsResumeRunsThem() throws {
        let scenario = try LifecycleScenario(devices: 2)
        let runState = VMRunState(registry: scenario.sourceRegistry, vcpus: scenario.sourceVM)
        #expect(try runState.stop() == true)
        #expect(scenario.sourceDevices.allSatisfy { $0.currentState == .stop })
        #expect(scenario.sourceDevices.allSatisfy { $0.recordedTransitions.map(\.to) == [.runningP2P, .stop] })
        #expect(try runState.stop() == false)
        try runState.start()
        #expect(scenario.sourceDevices.allSatisfy { $0.currentState == .running })
        #expect(scenario.sourceVM.isRunning)
    }
}

/// A VMM's side of an adopted device: a simulated host whose cdev the "VMM" opened, bound to
/// its iommufd and attached, with every later call recorded.
struct AdoptedDeviceFixture {
    let host: SimulatedVFIOHost
    let recorder: VFIOSyscallRecorder
    let driver: SimulatedVFIODriver
    let device: KernelVFIODevice

    init(seed: UInt64) throws {
        let host = SimulatedVFIOHost(cdevSupport: true)
        let driver = host.addDevice(
            .pci("0000:00:05.0"), group: 3, cdevIndex: 0, configuration: .mtty(seed: seed), clock: SystemSimulationClock())
        let flags = O_RDWR | O_CLOEXEC
        let iommufd = try host.open("/simulated/dev/iommu", flags).get()
        var alloc = IOMMUIOASAlloc().bytes
        _ = try alloc.withUnsafeMutableBytes { host.ioctl(iommufd, VFIOUAPI.iommuIOASAlloc, .buffer($0)) }.get()
        let ioas = try #require(IOMMUIOASAlloc(bytes: alloc)).outIOASID
        let fd = try host.open("/simulated/dev/vfio/devices/vfio0", flags).get()
        var bind = VFIODeviceBindIOMMUFD(iommufd: iommufd).bytes
        _ = try bind.withUnsafeMutableBytes { host.ioctl(fd, VFIOUAPI.deviceBindIOMMUFD, .buffer($0)) }.get()
        var attach = VFIODeviceAttachIOMMUFDPT(ptID: ioas).bytes
        _ = try attach.withUnsafeMutableBytes { host.ioctl(fd, VFIOUAPI.deviceAttachIOMMUFDPT, .buffer($0)) }.get()
        let recorder = VFIOSyscallRecorder(base: host)
        self.device = try KernelVFIODevice.adopting(
            deviceFD: FileDescriptor(rawValue: fd), name: "0000:00:05.0",
            iommu: .iommufd(FileDescriptor(rawValue: iommufd), ioasID: ioas),
            ownership: .transferred, system: recorder)
        self.host = host
        self.driver = driver
        self.recorder = recorder
    }
}

@Suite struct AdoptedDeviceMigrationTests {
    @Test func aVMMsOpenDevicesMigrateWithoutASecondOpen() async throws {
        let source = try AdoptedDeviceFixture(seed: 3)
        let destination = try AdoptedDeviceFixture(seed: 9)
        let sourceRegistry = HandlerRegistry()
        let destinationRegistry = HandlerRegistry()
        let sh = VFIOPCIHandler(device: source.device)
        let dh = VFIOPCIHandler(device: destination.device)
        try sourceRegistry.register(sh, idstr: sh.identity.idstr, instanceID: 0, versionID: 1)
        try destinationRegistry.register(dh, idstr: dh.identity.idstr, instanceID: 0, versionID: 1)
        let parameters = lifecycleParameters(multifd: false)
        let (s, d) = await migrateOverSocketPairs(
            MigrationSource(
                registry: sourceRegistry, vm: SequencedVM(running: true), configuration: LifecycleScenario.machine, parameters: parameters),
            MigrationDestination(
                registry: destinationRegistry, vm: SequencedVM(running: false), configuration: LifecycleScenario.machine,
                parameters: parameters))
        _ = try s.get()
        _ = try d.get()
        #expect(source.driver.currentState == .stop)
        #expect(destination.driver.currentState == .running)
        #expect(destination.driver.recordedArcs.contains(SimulatedVFIOArc(.resuming, .stop)))
        for fixture in [source, destination] {
            #expect(!fixture.recorder.records.contains { $0.kind == .open }, "\(fixture.recorder.records.filter { $0.kind == .open })")
        }
        #expect(sh.statistics.stopCopyBytes + sh.statistics.preCopyBytes == dh.statistics.loadedBytes)
        #expect(dh.statistics.loadedBytes > 0)
    }
}
