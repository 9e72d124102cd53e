import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

@Suite("Simulated device: injected failures, ERROR, the pre-fix kernel and the feature front-end")
struct SimulatedFaultTests {
    static let flags7: VFIOMigrationFlags = [.stopCopy, .p2p, .preCopy]

    @Test("A failing arc leaves the device at the last completed step, and the error says so")
    func arcFailureStopsAtLastStep() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        device.injectFailure(.init(from: .runningP2P, to: .stop, errno: .ioError))
        #expect(throws: VFIOError.setStateFailed(device: device.name, requested: .stopCopy, errno: .ioError, actual: .runningP2P)) {
            try device.setState(.stopCopy)
        }
        #expect(device.recordedArcs == [SimulatedVFIOArc(.running, .runningP2P)])
        // The failure fired once; the request now completes from where the device stopped.
        let fd = try device.setState(.stopCopy)
        #expect(fd != nil)
        #expect(device.recordedArcs.map(\.description) == ["RUNNING→RUNNING_P2P", "RUNNING_P2P→STOP", "STOP→STOP_COPY"])
    }

    @Test(
        "Failure is injectable at every arc of every path",
        arguments: TransitionCase.all.filter {
            $0.to != .error && $0.to.isSupported(by: $0.flags) && $0.from != $0.to && !($0.from == .stopCopy && $0.to.isPreCopy)
        })
    func failureAtEveryArc(_ c: TransitionCase) throws {
        let path = try #require(ReferenceTable.path(c.from, c.to, c.flags))
        var previous = c.from
        for (index, step) in path.enumerated() {
            let (device, _) = try SimulatedTransitionTests.device(c.flags, at: c.from)
            device.injectFailure(.init(from: previous, to: step, errno: .ioError))
            #expect(throws: VFIOError.setStateFailed(device: device.name, requested: c.to, errno: .ioError, actual: previous)) {
                try device.setState(c.to)
            }
            #expect(device.recordedArcs.count == index)
            previous = step
        }
    }

    @Test("A failing arc may put the device in ERROR, where every SET fails until reset (core style: EINVAL)")
    func errorIsStickyCoreStyle() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let fd = try #require(try device.setState(.preCopy))
        device.injectFailure(.init(from: .preCopyP2P, to: .stopCopy, errno: .noMemory, entersError: true))
        #expect(throws: VFIOError.setStateFailed(device: device.name, requested: .stopCopy, errno: .noMemory, actual: .error)) {
            try device.setState(.stopCopy)
        }
        #expect(throws: VFIOError.syscallFailed(operation: .read, device: device.name, errno: .operationNotSupportedByDevice)) {
            try fd.readChunk(8)
        }
        for target in [VFIODeviceState.running, .stop] {
            #expect(throws: VFIOError.setStateFailed(device: device.name, requested: target, errno: .invalidArgument, actual: .error)) {
                try device.setState(target)
            }
        }
        try device.reset()
        #expect(try device.deviceState() == .running)
        #expect(try device.setState(.preCopy) != nil)
    }

    @Test("pds-style ERROR answers every SET with EIO")
    func errorIsStickyPdsStyle() throws {
        var configuration = SimulatedVFIOConfiguration.opaque(migration: [.stopCopy, .p2p])
        configuration.errorStyle = .pds
        configuration.failures = [.init(from: .runningP2P, to: .stop, errno: .ioError, entersError: true)]
        let device = try SimulatedVFIODevice(configuration, clock: ManualSimulationClock())
        #expect(throws: VFIOError.setStateFailed(device: device.name, requested: .stop, errno: .ioError, actual: .error)) {
            try device.setState(.stop)
        }
        #expect(throws: VFIOError.setStateFailed(device: device.name, requested: .running, errno: .ioError, actual: .error)) {
            try device.setState(.running)
        }
    }

    @Test("A failure that fires every time keeps failing")
    func permanentFailure() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        device.injectFailure(.init(from: .running, to: .preCopy, errno: .noSpace, times: nil))
        for _ in 0..<3 {
            #expect(throws: VFIOError.setStateFailed(device: device.name, requested: .preCopy, errno: .noSpace, actual: .running)) {
                try device.setState(.preCopy)
            }
        }
        device.clearFailures()
        #expect(try device.setState(.preCopy) != nil)
    }

    // MARK: The kernel's own answers

    @Test("The fixed kernel answers STOP_COPY→PRE_COPY with EINVAL and echoes the requested state with fd -1")
    func fixedKernelRejectsHangRequest() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        try device.setState(.stop)
        try device.setState(.stopCopy)
        let (result, reply) = device.rawSetState(VFIODeviceState.preCopy.rawValue)
        #expect(result == .failure(.invalidArgument))
        #expect(reply == VFIOMigDeviceStatePayload(deviceState: 6, dataFD: -1))
        #expect(try device.deviceState() == .stopCopy)
    }

    @Test("A pre-fix kernel hangs on STOP_COPY→PRE_COPY_P2P: modelled as a timeout, and the device stays wedged")
    func preFixKernelHangs() throws {
        var configuration = SimulatedVFIOConfiguration.mtty()
        configuration.preFixKernel = true
        configuration.hangTimeout = .seconds(30)
        let clock = ManualSimulationClock()
        let device = try SimulatedVFIODevice(configuration, clock: clock)
        try device.setState(.stop)
        try device.setState(.stopCopy)
        let (result, _) = device.rawSetState(VFIODeviceState.preCopyP2P.rawValue)
        #expect(result == .failure(.timedOut))
        #expect(clock.totalSlept == .seconds(30))
        #expect(throws: VFIOError.syscallFailed(operation: .getState, device: device.name, errno: .timedOut)) {
            try device.deviceState()
        }
        // The client never sends the request in the first place.
        let safe = try SimulatedVFIODevice(configuration, clock: clock)
        try safe.setState(.stop)
        try safe.setState(.stopCopy)
        #expect(throws: VFIOError.forbiddenTransition(device: safe.name, from: .stopCopy, to: .preCopy)) { try safe.setState(.preCopy) }
        #expect(try safe.deviceState() == .stopCopy)
    }

    @Test("SET of ERROR, of an unsupported state or of a value ≥ 8 is EINVAL")
    func invalidRawRequests() throws {
        let device = try SimulatedVFIODevice(.opaque(migration: [.stopCopy]), clock: ManualSimulationClock())
        for raw: UInt32 in [0, 5, 6, 7, 8, 99] {
            let (result, reply) = device.rawSetState(raw)
            #expect(result == .failure(.invalidArgument), "state \(raw)")
            #expect(reply == VFIOMigDeviceStatePayload(deviceState: raw, dataFD: -1))
        }
        #expect(device.currentState == .running)
    }

    @Test("VFIO_DEVICE_FEATURE front-end: argsz, flag and PROBE rules")
    func featureFrontEnd() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let get = VFIOUAPI.featureGet
        let set = VFIOUAPI.featureSet
        let probe = VFIOUAPI.featureProbe
        let eight = [UInt8](repeating: 0, count: 8)
        #expect(device.rawFeature(flags: probe | get | 1, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: probe | 1, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: probe | set | 1, payload: []).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: probe | get | set | 2, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: get | set | 2, payload: eight).result == .failure(.invalidArgument))
        #expect(device.rawFeature(argsz: 4, flags: get | 1, payload: eight).result == .failure(.invalidArgument))
        #expect(device.rawFeature(argsz: 12, flags: get | 1, payload: eight).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: (1 << 20) | get | 1, payload: eight).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: 1, payload: eight).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: get | 0x20, payload: eight).result == .failure(.inappropriateIOCTLForDevice))
        #expect(device.rawFeature(flags: set | 9, payload: eight).result == .failure(.invalidArgument))
        let migration = device.rawFeature(flags: get | 1, payload: eight)
        #expect(migration.result == .success(0))
        #expect(Array(migration.bytes[8...]) == [7, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test("A device without migration answers its migration features ENOTTY")
    func notMigratable() throws {
        var configuration = SimulatedVFIOConfiguration.opaque()
        configuration.migration = nil
        let device = try SimulatedVFIODevice(configuration, clock: ManualSimulationClock())
        #expect(try device.migrationFlags() == nil)
        #expect(
            device.rawFeature(flags: VFIOUAPI.featureGet | 2, payload: [UInt8](repeating: 0, count: 8)).result
                == .failure(.inappropriateIOCTLForDevice))
        #expect(throws: VFIOError.migrationUnsupported(device: device.name)) { try device.setState(.stop) }
    }

    @Test("Configurations the simulator cannot model are refused")
    func invalidConfigurations() {
        #expect(
            throws: VFIOError.invalidConfiguration(
                device: "0000:5e:00.1", detail: "migration flags P2P|PRE_COPY are not one of the defined combinations 1, 3, 5, 7")
        ) {
            try SimulatedVFIODevice(.opaque(migration: [.p2p, .preCopy]))
        }
        #expect(throws: VFIOError.self) { try SimulatedVFIODevice(.mtty(ports: 25)) }
        #expect(throws: VFIOError.self) { try SimulatedVFIODevice(.opaque(size: 4, initialBytes: 5)) }
    }

    @Test("Closing the device fd disables its data fds and returns the device to RUNNING")
    func closingDeviceDisablesDataFDs() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let fd = try #require(try device.setState(.preCopy))
        try device.close()
        #expect(device.currentState == .running)
        #expect(device.deviceFileDescriptor == nil)
        #expect(throws: VFIOError.syscallFailed(operation: .read, device: device.name, errno: .operationNotSupportedByDevice)) {
            try fd.readChunk(8)
        }
    }
}
