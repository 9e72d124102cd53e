import SystemPackage
import VFIO

/// A simulated VFIO migration device, faithful to the kernel's uAPI: the same feature ioctls, state
/// machine, data-fd semantics and vendor stream formats, behind real fds. It runs in one process or in
/// two (a source and a destination device share nothing but the bytes of the stream).
///
/// Requests go through the same client code as `KernelVFIODevice`, down to `ioctl(2)` on a real fd
/// that the syscall seam routes to the simulated driver.
public final class SimulatedVFIODevice: VFIOMigrationDevice {
    /// The configuration the device was created with.
    public let configuration: SimulatedVFIOConfiguration
    let driver: SimulatedVFIODriver
    package let client: VFIODeviceClient

    /// Creates the device in RUNNING, with a real device fd (close-on-exec).
    public convenience init(
        _ configuration: SimulatedVFIOConfiguration, clock: any VFIOSimulationClock = SystemSimulationClock()
    ) throws(VFIOError) {
        try self.init(configuration, clock: clock, system: VFIOSystem.simulated)
    }

    /// Creates the device with its calls going through `system` (e.g. a `VFIOSyscallRecorder`).
    package init(
        _ configuration: SimulatedVFIOConfiguration, clock: any VFIOSimulationClock, system: any VFIOSyscalls
    ) throws(VFIOError) {
        if let problem = configuration.validationError {
            throw VFIOError.invalidConfiguration(device: configuration.name, detail: problem)
        }
        let driver = SimulatedVFIODriver(configuration: configuration, clock: clock)
        let fd: Int32
        switch SimulatedFileTable.shared.open(SimulatedDeviceFile(driver: driver)) {
        case .success(let opened): fd = opened
        case .failure(let errno):
            throw VFIOError.syscallFailed(operation: .open("simulated device"), device: configuration.name, errno: errno)
        }
        self.configuration = configuration
        self.driver = driver
        self.client = VFIODeviceClient(deviceFD: fd, name: configuration.name, system: system)
    }

    // MARK: VFIOMigrationDevice

    public var name: String { configuration.name }

    // migrationFlags, deviceState, setState, stopCopySize, reset, enablePrecopyInfoV2: VFIOUAPIDevice.

    /// Closes the device fd: every data fd is disabled and the device is back at RUNNING.
    public func close() throws(VFIOError) { try client.close() }

    // MARK: Inspection (the simulator's view, no ioctl)

    /// The device fd, or nil once closed.
    public var deviceFileDescriptor: FileDescriptor? { client.deviceFD.map { FileDescriptor(rawValue: $0) } }

    /// The driver's current state, read without an ioctl.
    public var currentState: VFIODeviceState { driver.state.withLock { $0.current } }

    /// Every single arc completed so far, oldest first.
    public var recordedArcs: [SimulatedVFIOArc] { driver.state.withLock { $0.arcLog } }

    /// Forgets the recorded arcs and transitions.
    public func clearRecordedArcs() {
        driver.state.withLock {
            $0.arcLog.removeAll()
            $0.transitionLog.removeAll()
        }
    }

    /// Every arc and reset so far, oldest first, each numbered in the process-wide order
    /// (``SimulatedVFIOSequence``) so the transitions of several devices can be merged.
    public var recordedTransitions: [SimulatedVFIOTransition] { driver.state.withLock { $0.transitionLog } }

    /// Arms a failure at an arc (in addition to those in the configuration).
    public func injectFailure(_ failure: SimulatedVFIOConfiguration.ArcFailure) {
        driver.state.withLock { $0.failures.append(failure) }
    }

    /// Disarms every injected failure.
    public func clearFailures() { driver.state.withLock { $0.failures.removeAll() } }

    /// Digest of the bytes read from the current save session, or of the last one once it ended.
    public var savedStreamDigest: VFIOStateDigest? {
        driver.state.withLock { $0.save?.hasher.finalize() ?? $0.lastSavedDigest }
    }

    /// Digest of the bytes the last committed resume session absorbed (set by RESUMING→STOP).
    public var loadedStreamDigest: VFIOStateDigest? { driver.state.withLock { $0.lastLoadedDigest } }

    /// The bytes the last committed resume session absorbed, when within `retainedLoadLimit`.
    public var loadedBytes: [UInt8]? { driver.state.withLock { $0.loadedBytes } }

    /// mlx5: firmware images loaded by the last committed resume session.
    public var loadedImageCount: Int { driver.state.withLock { $0.loadedImageCount } }

    /// Bytes absorbed so far by the open resume session (nil without one).
    public var resumeBytesReceived: UInt64? { driver.state.withLock { $0.resume?.received } }

    /// mtty: the current port structs (36 bytes each); a committed load replaces them.
    public var mttyPortBytes: [UInt8] { driver.state.withLock { $0.mttyPorts } }

    /// The exact mtty save blob for `ports` ports and the given port bytes: header + ports.
    public static func mttyBlob(ports: Int, portBytes: [UInt8]) -> [UInt8] {
        SimulatedDriverState.mttyHeader(ports: ports) + portBytes
    }

    /// Performs a raw `VFIO_DEVICE_FEATURE` SET of `MIG_DEVICE_STATE` with no client-side validation,
    /// as a buggy or hostile client would. Returns the ioctl's result and the payload the kernel wrote
    /// back. For tests of the kernel's own answers (e.g. STOP_COPY→PRE_COPY).
    public func rawSetState(_ raw: UInt32) -> (result: Result<Int32, Errno>, reply: VFIOMigDeviceStatePayload?) {
        guard let fd = client.deviceFD else { return (.failure(.badFileDescriptor), nil) }
        var bytes = VFIODeviceFeatureHeader.request(
            .migDeviceState, VFIOUAPI.featureSet, payload: VFIOMigDeviceStatePayload(deviceState: raw).bytes)
        let result = bytes.withUnsafeMutableBytes { client.system.ioctl(fd, VFIOUAPI.deviceFeature, .buffer($0)) }
        return (result, VFIOMigDeviceStatePayload(bytes: bytes[VFIODeviceFeatureHeader.size...]))
    }

    /// Performs a raw `VFIO_DEVICE_FEATURE` with the given header flags and payload bytes, returning the
    /// result and the bytes after the call. For tests of the feature front-end.
    public func rawFeature(argsz: UInt32? = nil, flags: UInt32, payload: [UInt8]) -> (result: Result<Int32, Errno>, bytes: [UInt8]) {
        client.rawFeature(argsz: argsz, flags: flags, payload: payload)
    }
}

/// Its uAPI calls go through a `VFIODeviceClient`, as the kernel device's do: the raw escape hatch and
/// the behaviour checks reach it the same way.
extension SimulatedVFIODevice: VFIOClientBackedDevice {}
