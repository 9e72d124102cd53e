import ExampleVM
import MLX5Handler
import Testing
import VFIOPCIHandler

@Suite struct DeviceSpecTests {
    @Test func mlx5SpecSetsEveryKey() throws {
        let spec = try DeviceSpec(
            parsing: "mlx5:state=256MiB,initial=64MiB,load=300ms,final-load=20ms,dirty=4MiB/s,dma=1MiB/s,name=0000:3b:00.2,seed=7")
        #expect(spec.kind == .mlx5)
        #expect(spec.stateBytes == 256 << 20)
        #expect(spec.initialBytes == 64 << 20)
        #expect(spec.loadCost == .milliseconds(300))
        #expect(spec.finalLoadCost == .milliseconds(20))
        #expect(spec.dirtyBytesPerSecond == 4 << 20)
        #expect(spec.dmaBytesPerSecond == 1 << 20 && spec.dmaPagesPerSecond == 256)
        #expect(spec.name == "0000:3b:00.2")
        #expect(spec.seed == 7)
        // The description is itself a spec that parses to the same device.
        #expect(try DeviceSpec(parsing: spec.description) == spec)
    }

    @Test func defaultsFollowTheKind() throws {
        let mlx5 = try DeviceSpec(parsing: "mlx5")
        #expect(mlx5.stateBytes == 64 << 20 && mlx5.initialBytes == 16 << 20 && mlx5.loadCost == .zero)
        let blob = try DeviceSpec(parsing: "vfio-pci:state=8MiB")
        #expect(blob.kind == .vfioPCI && blob.initialBytes == 2 << 20)
        let mtty = try DeviceSpec(parsing: "mtty:ports=4,load=1ms")
        #expect(mtty.ports == 4 && mtty.stateBytes == 0 && mtty.loadCost == .milliseconds(1))
        #expect(mtty.dmaBytesPerSecond == 0 && mtty.dmaPagesPerSecond == 0)
        // Any kind may DMA; less than a page a second still writes one.
        #expect(try DeviceSpec(parsing: "mtty:dma=100").dmaPagesPerSecond == 1)
    }

    @Test func simulatedConfigurationSplitsTheMLX5StateIntoInitialAndFinalImages() throws {
        let spec = try DeviceSpec(parsing: "mlx5:state=64MiB,initial=16MiB,load=200ms")
        let configuration = spec.simulatedConfiguration(name: "0000:00:01.0", seed: 3)
        guard case .mlx5(let payload) = configuration.payload else {
            Issue.record("not an mlx5 payload")
            return
        }
        #expect(payload.imageSize == 16 << 20)
        #expect(payload.finalImageSize == 48 << 20)
        #expect(configuration.loadCost.initial == .milliseconds(200))
        #expect(configuration.name == "0000:00:01.0" && configuration.seed == 3)
        #expect(configuration.validationError == nil)
    }

    @Test(arguments: [
        ("nic", "unknown kind"),
        ("mlx5:state", "is not key=value"),
        ("mlx5:state=lots", "is not a size"),
        ("mlx5:state=1MiB,state=2MiB", "given twice"),
        ("mlx5:load=300", "is not a duration"),
        ("mlx5:load=-1ms", "is not a duration"),
        ("mlx5:state=1MiB,initial=2MiB", "exceeds state"),
        ("mlx5:state=0", "more than 0"),
        ("mlx5:state=8GiB", "at most"),
        ("mtty:state=1MiB", "applies to mlx5 and vfio-pci"),
        ("vfio-pci:dirty=1MiB", "applies to mlx5"),
        ("mtty:dma=fast", "is not a rate"),
        ("mtty:dma=2GiB/s", "up to 1GiB/s"),
        ("mtty:ports=30", "1 to 24 ports"),
        ("mlx5:name=3b:00.2", "not a PCI address"),
        ("mlx5:colour=red", "unknown key"),
        ("mlx5:state=99999999999999999999", "is not a size")
    ])
    func badSpecsSayWhatIsWrong(text: String, problem: String) {
        #expect {
            try DeviceSpec(parsing: text)
        } throws: { error in
            guard let error = error as? DeviceSpecError else { return false }
            return error.spec == text && error.problem.contains(problem)
        }
    }

    @Test func namesAreAssignedByPositionAndMustNotClash() throws {
        var configuration = ExampleMachineConfiguration(devices: [try DeviceSpec(parsing: "mlx5"), try DeviceSpec(parsing: "vfio-pci")])
        #expect(try configuration.deviceNames() == ["0000:00:01.0", "0000:00:02.0"])
        configuration.devices.append(try DeviceSpec(parsing: "mtty:name=0000:00:02.0"))
        #expect(throws: DeviceSpecError.self) { try configuration.deviceNames() }
        #expect(DeviceSpec.defaultName(index: 15) == "0000:00:10.0")
    }

    @Test func unitsParseWhatPeopleWrite() {
        #expect(Units.parseBytes("4096") == 4096)
        #expect(Units.parseBytes("64MiB") == 64 << 20)
        #expect(Units.parseBytes("2g") == 2 << 30)
        #expect(Units.parseBytes("1GB") == 1_000_000_000)
        #expect(Units.parseBytes("1.5MiB") == nil)
        #expect(Units.parseBytes("MiB") == nil)
        #expect(Units.parseDuration("300ms") == .milliseconds(300))
        #expect(Units.parseDuration("1.5s") == .milliseconds(1500))
        #expect(Units.parseDuration("250us") == .microseconds(250))
        #expect(Units.parseDuration("300") == nil)
        #expect(Units.parseDuration(".5s") == nil)
        #expect(Units.bytes(64 << 20) == "64.0 MiB")
        #expect(Units.bytes(1536) == "1.50 KiB")
        #expect(Units.duration(.milliseconds(212)) == "212 ms")
        #expect(Units.fixed(-0.25, digits: 1) == "-0.3" || Units.fixed(-0.25, digits: 1) == "-0.2")
    }
}

/// The example VM makes its device handlers as a VMM does: through `VFIOVendorRegistry`, which
/// picks the module by the device's PCI identity.
@Suite struct VendorRegistryPathTests {
    @Test func eachDeviceGetsTheModuleItsIdentityMatches() throws {
        let configuration = ExampleMachineConfiguration(devices: [
            try DeviceSpec(parsing: "mlx5:state=1MiB,initial=512KiB,load=3ms,final-load=2ms"),
            try DeviceSpec(parsing: "vfio-pci:state=1MiB,final-load=4ms"), try DeviceSpec(parsing: "mtty")
        ])
        let machine = try ExampleMachine(configuration, role: .destination)
        defer { machine.shutdown() }
        try #require(machine.devices.count == 3)
        let (mlx5, generic, mtty) = (machine.devices[0].handler, machine.devices[1].handler, machine.devices[2].handler)
        let mlx5Tuning = try #require(mlx5.tuning as? MLX5Tuning)
        #expect(mlx5Tuning.finalLoadCost == .milliseconds(2))
        #expect(mlx5Tuning.initialLoadCost == .milliseconds(3))
        #expect((generic.tuning as? GenericVFIOPCITuning)?.finalLoadCost == .milliseconds(4))
        #expect(mtty.tuning is GenericVFIOPCITuning)
        // Registered under QEMU's "<address>/vfio", after RAM.
        #expect(machine.registry.entries.map(\.identity.idstr) == ["ram", "0000:00:01.0/vfio", "0000:00:02.0/vfio", "0000:00:03.0/vfio"])
        // Each handler has its own tuning (a tuning holds its device's buffers).
        let second = try ExampleMachine(configuration, role: .destination)
        defer { second.shutdown() }
        #expect(second.devices[0].handler.tuning as AnyObject !== mlx5.tuning as AnyObject)
    }
}
