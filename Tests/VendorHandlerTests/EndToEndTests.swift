import DeviceMatch
import ExampleVM
import MLX5Handler
import MigrationCore
import MigrationStream
import MigrationTestKit
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// One migration of a guest with RAM, a simulated mlx5 VF and a generic VFIO device, through
/// the vendor registry and the real engine, with switchover-ack off and on.
@Suite struct EndToEndTests {
    struct Run {
        var downtime: Duration?
        var predicted: Duration?
        var verified: Bool
    }

    static func migrate(switchoverAck: Bool) async throws -> Run {
        let vendors = VFIOVendorRegistry([MLX5Module.module])
        // 16 MiB of mlx5 state, 4 MiB of it initial (the demo and the benchmarks move 64 MiB and
        // more in release builds); loading the initial image costs the destination 200 ms
        // (firmware allocation), as seed 002 describes for mlx5.
        let mlx5 = SimulatedVFIOConfiguration.mlx5(
            name: "0000:3b:00.2", imageSize: 4 << 20, finalImageSize: 12 << 20,
            seed: 1, loadCost: .init(initial: .milliseconds(200)))
        let generic = SimulatedVFIOConfiguration.opaque(name: "0000:5e:00.1", size: 4 << 20, initialBytes: 1 << 20, seed: 2)
        let mlx5ID = PCIIdentity(vendorID: 0x15b3, deviceID: 0x101e, classCode: 0x020000, driver: "mlx5_vfio_pci")
        let genericID = PCIIdentity(vendorID: 0x19e5, deviceID: 0xa256, classCode: 0x108000, driver: "hisi_acc_vfio_pci")

        let sourceVM = try ExampleVM(memoryBytes: 8 << 20, dirtyPagesPerSecond: 2000)
        let destinationVM = try ExampleVM(memoryBytes: 8 << 20, dirtyPagesPerSecond: 0, seed: 9)
        let (sourceRegistry, destinationRegistry) = (HandlerRegistry(), HandlerRegistry())
        try sourceRegistry.register(sourceVM.ramHandler, idstr: "ram", instanceID: 0, versionID: 4)
        try destinationRegistry.register(destinationVM.ramHandler, idstr: "ram", instanceID: 0, versionID: 4)

        var devices: [(SimulatedVFIODevice, SimulatedVFIODevice)] = []
        for (config, identity) in [(mlx5, mlx5ID), (generic, genericID)] {
            var destConfig = config
            destConfig.seed &+= 100
            let pair = (try SimulatedVFIODevice(config), try SimulatedVFIODevice(destConfig))
            let onSource = try vendors.register(pair.0, identity: identity, in: sourceRegistry)
            let onDestination = try vendors.register(pair.1, identity: identity, in: destinationRegistry)
            #expect(onSource.moduleName == (config.name == mlx5.name ? "mlx5" : "vfio-pci"))
            #expect(onSource.identity == onDestination.identity)
            devices.append(pair)
        }

        var parameters = MigrationParameters()
        parameters.switchoverAck = switchoverAck
        // The decision is the engine tests' subject; here it must not depend on how busy this
        // shared machine is: a fixed switchover bandwidth, and a limit that our prediction (which
        // counts the destination's measured load time, slow in a loaded debug build) cannot
        // exceed. Otherwise the source rightly keeps iterating while the guest keeps RAM moving.
        parameters.downtimeLimit = .seconds(30)
        parameters.switchoverBandwidth = 1 << 30
        parameters.stallTimeout = .seconds(120)
        let machine = MachineConfiguration(machineType: "pc-q35-switchover")
        let source = MigrationSource(registry: sourceRegistry, vm: VMAdapter(sourceVM), configuration: machine, parameters: parameters)
        let destination = MigrationDestination(
            registry: destinationRegistry, vm: VMAdapter(destinationVM),
            configuration: machine, parameters: parameters)
        sourceVM.resume()
        let (a, b) = try DescriptorConnection.socketPair()
        async let incoming = destination.run(over: b)
        let stats = try await source.run(over: a)
        _ = try await incoming
        destinationVM.stop()

        let devicesVerified = devices.allSatisfy { $0.1.loadedStreamDigest != nil && $0.1.loadedStreamDigest == $0.0.savedStreamDigest }
        return Run(
            downtime: stats.downtime, predicted: stats.decision?.predictedDowntime,
            verified: devicesVerified && sourceVM.ram.digest() == destinationVM.ram.digest())
    }

    @Test(.timeLimit(.minutes(2)))
    func mlx5AndGenericDevicesArriveByteIdenticalWithAndWithoutSwitchoverAck() async throws {
        let without = try await Self.migrate(switchoverAck: false)
        let with = try await Self.migrate(switchoverAck: true)
        #expect(without.verified)
        #expect(with.verified)
        // Printed, not asserted: figures come from benchmarks, and this machine is shared.
        print(
            "end-to-end downtime: switchover-ack off \(without.downtime.map { "\($0)" } ?? "-"), on \(with.downtime.map { "\($0)" } ?? "-") (QEMU anchor for a 300 MB mlx5 device: 1900 ms → 420 ms)"
        )
    }
}

/// Lets the engine stop and resume an ExampleVM.
final class VMAdapter: VMController, @unchecked Sendable {
    let vm: ExampleVM
    init(_ vm: ExampleVM) { self.vm = vm }
    var isRunning: Bool { vm.isRunning }
    func stopVM() throws { vm.stop() }
    func resumeVM() throws { vm.resume() }
}
