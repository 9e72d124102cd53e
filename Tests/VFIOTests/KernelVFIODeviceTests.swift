import Foundation
import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

/// A kernel-backed device opened on a simulated host, with every call recorded.
struct KernelFixture {
    let host: SimulatedVFIOHost
    let recorder: VFIOSyscallRecorder
    let driver: SimulatedVFIODriver
    let device: KernelVFIODevice

    static let address = VFIODeviceAddress.pci("3b:00.2")

    init(
        cdev: Bool = false, access: VFIODeviceAccess = .automatic,
        configuration: SimulatedVFIOConfiguration = .mtty(), address: VFIODeviceAddress = Self.address
    ) throws {
        host = SimulatedVFIOHost(cdevSupport: cdev)
        driver = host.addDevice(address, group: 12, cdevIndex: 0, configuration: configuration, clock: ManualSimulationClock())
        recorder = VFIOSyscallRecorder(base: host)
        device = try KernelVFIODevice.open(address, access: access, paths: host.paths, system: recorder)
    }

    var deviceFD: Int32 { device.deviceFileDescriptor?.rawValue ?? -1 }

    /// ioctl records on `fd` since the last clear.
    func ioctls(on fd: Int32) -> [VFIOSyscallRecord] { recorder.ioctls.filter { $0.fd == fd } }
}

func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) } }
func le32(_ value: Int32) -> [UInt8] { le32(UInt32(bitPattern: value)) }

@Suite("Kernel-backed device: syscall traces through the seam")
struct KernelVFIODeviceTests {
    // MARK: Opening

    @Test("Opening through the group issues the container and group ioctls in order with exact arguments")
    func groupOpenTrace() throws {
        let fixture = try KernelFixture()
        #expect(fixture.device.name == "0000:3b:00.2")
        #expect(fixture.device.openPath == .group(number: 12, noIOMMU: false))
        let records = fixture.recorder.records
        let sys = "/simulated/sys/bus/pci/devices/0000:3b:00.2"
        // No IOMMUFD on this host: the cdev attempt stops at /dev/iommu.
        #expect(records[0].call == .listDirectory(path: sys + "/vfio-dev"))
        #expect(records[1].call == .open(path: "/simulated/dev/iommu", flags: O_RDWR | O_CLOEXEC))
        #expect(records[1].result == .failure(.noSuchFileOrDirectory))
        #expect(records[2].call == .readlink(path: sys + "/iommu_group"))
        #expect(records[3].call == .open(path: "/simulated/dev/vfio/vfio", flags: O_RDWR | O_CLOEXEC))
        let container = Int32(try records[3].result.get())
        #expect(records[4].fd == container)
        #expect(records[4].call == .ioctl(request: 0x3B64, argument: .none))
        #expect(records[5].call == .open(path: "/simulated/dev/vfio/12", flags: O_RDWR | O_CLOEXEC))
        let group = Int32(try records[5].result.get())
        #expect(records[6].fd == group)
        #expect(records[6].call == .ioctl(request: 0x3B67, argument: .bytes([8, 0, 0, 0, 0, 0, 0, 0])))
        #expect(records[6].argumentAfter == [8, 0, 0, 0, 1, 0, 0, 0])
        #expect(records[7].fd == group)
        #expect(records[7].call == .ioctl(request: 0x3B68, argument: .bytes(le32(container))))
        #expect(records[8].fd == container)
        #expect(records[8].call == .ioctl(request: 0x3B65, argument: .value(3)))
        #expect(records[9].fd == container)
        #expect(records[9].call == .ioctl(request: 0x3B66, argument: .value(3)))
        #expect(records[10].fd == group)
        #expect(records[10].call == .ioctl(request: 0x3B6A, argument: .bytes(Array("0000:3b:00.2".utf8) + [0])))
        #expect(records[10].result == .success(Int(fixture.deviceFD)))
        #expect(records.count == 11)
    }

    @Test("Opening through the cdev allocates an IOAS, binds the device to iommufd and attaches it")
    func cdevOpenTrace() throws {
        let fixture = try KernelFixture(cdev: true)
        #expect(fixture.device.openPath == .cdev(name: "vfio0", ioasID: 1))
        let records = fixture.recorder.records
        #expect(records[1].call == .open(path: "/simulated/dev/iommu", flags: O_RDWR | O_CLOEXEC))
        let iommufd = Int32(try records[1].result.get())
        #expect(records[2].call == .ioctl(request: 0x3B81, argument: .bytes([12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])))
        #expect(records[2].argumentAfter == [12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
        #expect(records[3].call == .open(path: "/simulated/dev/vfio/devices/vfio0", flags: O_RDWR | O_CLOEXEC))
        #expect(records[4].call == .ioctl(request: 0x3B76, argument: .bytes([16, 0, 0, 0, 0, 0, 0, 0] + le32(iommufd) + [0, 0, 0, 0])))
        // A HWPT with dirty tracking is asked for first (dev_id 2, IOAS 1); this IOMMU has none: EOPNOTSUPP.
        #expect(
            records[5].call
                == .ioctl(request: 0x3B89, argument: .bytes([40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1] + [UInt8](repeating: 0, count: 27))))
        #expect(records[5].result.failureErrno == .notSupported)
        #expect(records[6].call == .ioctl(request: 0x3B77, argument: .bytes([12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])))
        #expect(records.count == 7)
        #expect(fixture.device.dirtyTrackingHWPT == nil)
        #expect(try fixture.device.migrationFlags() == [.stopCopy, .p2p, .preCopy])
    }

    @Test("An mdev is found by UUID and its device fd asked for by UUID")
    func mdevOpensByUUID() throws {
        let uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
        let fixture = try KernelFixture(access: .group, address: .mdev(uuid))
        #expect(fixture.recorder.records[0].call == .readlink(path: "/simulated/sys/bus/mdev/devices/\(uuid)/iommu_group"))
        #expect(fixture.recorder.ioctls.last?.call == .ioctl(request: 0x3B6A, argument: .bytes(Array(uuid.utf8) + [0])))
        #expect(try fixture.device.deviceState() == .running)
    }

    @Test("A device without an IOMMU group is reported as not found")
    func missingGroupIsNotFound() throws {
        let host = SimulatedVFIOHost()
        #expect(throws: VFIOError.self) {
            try KernelVFIODevice.open(.pci("0000:00:1f.0"), access: .group, paths: host.paths, system: host)
        }
        do {
            _ = try KernelVFIODevice.open(.pci("0000:00:1f.0"), access: .group, paths: host.paths, system: host)
        } catch {
            guard case .deviceNotFound(let device, _) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(device == "0000:00:1f.0")
        }
    }

    @Test("sysfs lookups read a directory tree laid out like /sys")
    func sysfsTreeOnDisk() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vfio-sysfs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let deviceDirectory = root.appendingPathComponent("bus/pci/devices/0000:3b:00.2")
        try FileManager.default.createDirectory(
            at: deviceDirectory.appendingPathComponent("vfio-dev/vfio3"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent("kernel/iommu_groups/41"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: deviceDirectory.appendingPathComponent("iommu_group").path, withDestinationPath: "../../../kernel/iommu_groups/41")

        let paths = VFIOHostPaths(sysfsRoot: root.path, devRoot: "/simulated/dev")
        let host = SimulatedVFIOHost(paths: paths, virtualSysfs: false)
        host.addDevice(.pci("0000:3b:00.2"), group: 41, cdevIndex: 3, configuration: .mlx5(), clock: ManualSimulationClock())
        let opener = VFIODeviceOpener(address: .pci("0000:3b:00.2"), paths: paths, system: host)
        #expect(try opener.groupNumber() == 41)
        #expect(opener.cdevName() == "vfio3")
        let device = try KernelVFIODevice.open(.pci("0000:3b:00.2"), access: .group, paths: paths, system: host)
        #expect(device.openPath == .group(number: 41, noIOMMU: false))
    }

    // MARK: Migration ioctls

    @Test("Migration requests are VFIO_DEVICE_FEATURE (0x3B75) with exact headers and payloads")
    func featureIoctlBytes() throws {
        let fixture = try KernelFixture()
        let fd = fixture.deviceFD
        fixture.recorder.clearRecords()

        #expect(try fixture.device.migrationFlags() == [.stopCopy, .p2p, .preCopy])
        #expect(try fixture.device.deviceState() == .running)
        let saveFD = try #require(try fixture.device.setState(.preCopy))
        #expect(try fixture.device.stopCopySize() == 96)
        try fixture.device.reset()

        let ioctls = fixture.ioctls(on: fd)
        #expect(ioctls.map(\.request) == [0x3B75, 0x3B75, 0x3B75, 0x3B75, 0x3B75, 0x3B6F])
        // GET MIGRATION: argsz 16, flags GET|1.
        #expect(ioctls[0].argumentBytes == [16, 0, 0, 0, 0x01, 0, 0x01, 0] + [UInt8](repeating: 0, count: 8))
        #expect(ioctls[0].argumentAfter == [16, 0, 0, 0, 0x01, 0, 0x01, 0, 7, 0, 0, 0, 0, 0, 0, 0])
        // GET MIG_DEVICE_STATE: argsz 16, flags GET|2, {0, -1} in, {RUNNING, -1} out.
        #expect(ioctls[1].argumentBytes == [16, 0, 0, 0, 0x02, 0, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(ioctls[1].argumentAfter == [16, 0, 0, 0, 0x02, 0, 0x01, 0, 2, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        // setState(PRE_COPY) reads the state first (never STOP_COPY→PRE_COPY), then SET|2 {6, -1}.
        #expect(ioctls[2].argumentBytes == ioctls[1].argumentBytes)
        #expect(ioctls[3].argumentBytes == [16, 0, 0, 0, 0x02, 0, 0x02, 0, 6, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        let dataFD = try #require(saveFD.fileDescriptor).rawValue
        #expect(ioctls[3].argumentAfter == [16, 0, 0, 0, 0x02, 0, 0x02, 0, 6, 0, 0, 0] + le32(dataFD))
        // GET MIG_DATA_SIZE: flags GET|9.
        #expect(ioctls[4].argumentBytes == [16, 0, 0, 0, 0x09, 0, 0x01, 0] + [UInt8](repeating: 0, count: 8))
        #expect(ioctls[4].argumentAfter == [16, 0, 0, 0, 0x09, 0, 0x01, 0, 96, 0, 0, 0, 0, 0, 0, 0])
        #expect(ioctls[5].call == .ioctl(request: 0x3B6F, argument: .none))
    }

    @Test("PRECOPY_INFO is ioctl 0x3B79 on the data fd, with flags zeroed going in and ignored coming out")
    func precopyInfoOnDataFD() throws {
        let fixture = try KernelFixture()
        let saveFD = try #require(try fixture.device.setState(.preCopy))
        let dataFD = try #require(saveFD.fileDescriptor).rawValue
        fixture.recorder.clearRecords()
        #expect(try saveFD.precopyInfo() == VFIOPrecopyInfo(initialBytes: 24, dirtyBytes: 0))
        let record = try #require(fixture.recorder.ioctls.first)
        #expect(record.fd == dataFD)
        #expect(record.call == .ioctl(request: 0x3B79, argument: .bytes([24] + [UInt8](repeating: 0, count: 23))))
        #expect(record.argumentAfter == [24, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 8))

        // A v1 driver echoes whatever flags it was given.
        var raw = VFIOPrecopyInfoLayout(flags: 0xABC).bytes
        _ = raw.withUnsafeMutableBytes { fixture.recorder.ioctl(dataFD, 0x3B79, .buffer($0)) }
        #expect(VFIOPrecopyInfoLayout(bytes: raw)?.flags == 0xABC)
    }

    @Test("A STOP_COPY→PRE_COPY request never reaches the kernel")
    func hangRequestNeverSent() throws {
        let fixture = try KernelFixture()
        try fixture.device.setState(.stop)
        let saveFD = try fixture.device.setState(.stopCopy)
        #expect(saveFD != nil)
        fixture.recorder.clearRecords()
        for target in [VFIODeviceState.preCopy, .preCopyP2P] {
            #expect(throws: VFIOError.forbiddenTransition(device: "0000:3b:00.2", from: .stopCopy, to: target)) {
                try fixture.device.setState(target)
            }
        }
        let sets = fixture.recorder.ioctls.filter { ($0.argumentBytes?[6] ?? 0) & 0x02 != 0 }
        #expect(sets.isEmpty)
        #expect(fixture.driver.currentState == .stopCopy)
    }

    @Test("States the flags lack are refused without a syscall")
    func unsupportedStateRefused() throws {
        let fixture = try KernelFixture(configuration: .opaque(migration: [.stopCopy, .p2p]))
        _ = try fixture.device.migrationFlags()
        fixture.recorder.clearRecords()
        #expect(throws: VFIOError.unsupportedState(device: "0000:3b:00.2", requested: .preCopy, flags: [.stopCopy, .p2p])) {
            try fixture.device.setState(.preCopy)
        }
        #expect(throws: VFIOError.unsupportedState(device: "0000:3b:00.2", requested: .error, flags: [.stopCopy, .p2p])) {
            try fixture.device.setState(.error)
        }
        #expect(fixture.recorder.records.isEmpty)
    }

    // MARK: Injected errno

    @Test("Probe: ENOTTY and EINVAL mean unsupported (nil); EIO is a failure")
    func probeErrnoHandling() throws {
        for (errno, expected) in [(Errno.inappropriateIOCTLForDevice, true), (.invalidArgument, true), (.ioError, false)] {
            let fixture = try KernelFixture()
            fixture.recorder.inject(errno, on: .ioctl, request: 0x3B75)
            if expected {
                #expect(try fixture.device.migrationFlags() == nil)
            } else {
                #expect(throws: VFIOError.syscallFailed(operation: .probeMigration, device: "0000:3b:00.2", errno: .ioError)) {
                    try fixture.device.migrationFlags()
                }
            }
        }
    }

    @Test("A device without migration answers the probe ENOTTY and refuses SET")
    func nonMigratableDevice() throws {
        var configuration = SimulatedVFIOConfiguration.opaque()
        configuration.migration = nil
        let fixture = try KernelFixture(configuration: configuration)
        #expect(try fixture.device.migrationFlags() == nil)
        #expect(fixture.recorder.ioctls.last?.result == .failure(.inappropriateIOCTLForDevice))
        #expect(throws: VFIOError.migrationUnsupported(device: "0000:3b:00.2")) { try fixture.device.setState(.stop) }
    }

    @Test("EINTR is retried: on GET, on PRECOPY_INFO, on reads and on the open path")
    func interruptedCallsAreRetried() throws {
        let host = SimulatedVFIOHost()
        host.addDevice(KernelFixture.address, group: 12, configuration: .mtty(), clock: ManualSimulationClock())
        let recorder = VFIOSyscallRecorder(base: host)
        recorder.inject(.interrupted, on: .ioctl, request: 0x3B6A)
        let device = try KernelVFIODevice.open(KernelFixture.address, access: .group, paths: host.paths, system: recorder)
        #expect(recorder.ioctls.suffix(2).map(\.result.isSuccess) == [false, true])

        recorder.inject(.interrupted, on: .ioctl, request: 0x3B75, times: 2)
        #expect(try device.deviceState() == .running)
        let saveFD = try #require(try device.setState(.preCopy))
        recorder.inject(.interrupted, on: .ioctl, request: 0x3B79)
        #expect(try saveFD.precopyInfo().initialBytes == 24)
        recorder.inject(.interrupted, on: .read)
        #expect(try saveFD.readChunk(100).bytes.count == 24)
        #expect(recorder.records.filter { $0.kind == .read }.map(\.result) == [.failure(.interrupted), .success(24)])
    }

    @Test("An interrupted SET that took no step is reissued after a GET")
    func interruptedSetIsReissued() throws {
        let fixture = try KernelFixture()
        let fd = fixture.deviceFD
        _ = try fixture.device.migrationFlags()
        fixture.recorder.clearRecords()
        fixture.recorder.inject(.interrupted, on: .ioctl, request: 0x3B75)
        try fixture.device.setState(.stop)
        let flags = fixture.ioctls(on: fd).compactMap { $0.argumentBytes.map { LittleEndianBytes.load(UInt32.self, from: $0, at: 4) } }
        // SET (interrupted), GET (still RUNNING), SET again.
        #expect(flags == [0x20002, 0x10002, 0x20002])
        #expect(fixture.ioctls(on: fd).map(\.result.isSuccess) == [false, true, true])
        #expect(fixture.driver.currentState == .stop)
    }

    @Test("A failed SET is followed by a GET and the error reports the real state")
    func failedSetReportsRealState() throws {
        for errno in [Errno.ioError, .invalidArgument, .resourceTemporarilyUnavailable, .inappropriateIOCTLForDevice] {
            let fixture = try KernelFixture()
            _ = try fixture.device.migrationFlags()
            fixture.recorder.clearRecords()
            fixture.recorder.inject(errno, on: .ioctl, request: 0x3B75)
            #expect(throws: VFIOError.setStateFailed(device: "0000:3b:00.2", requested: .stop, errno: errno, actual: .running)) {
                try fixture.device.setState(.stop)
            }
            let flags = fixture.recorder.ioctls.compactMap { $0.argumentBytes.map { LittleEndianBytes.load(UInt32.self, from: $0, at: 4) } }
            #expect(flags == [0x20002, 0x10002])
        }
    }

    @Test("When the GET after a failed SET fails too, the real state is unknown")
    func failedSetAndFailedGet() throws {
        let fixture = try KernelFixture()
        _ = try fixture.device.migrationFlags()
        fixture.recorder.inject(.ioError, on: .ioctl, request: 0x3B75, times: 2)
        #expect(throws: VFIOError.setStateFailed(device: "0000:3b:00.2", requested: .stop, errno: .ioError, actual: nil)) {
            try fixture.device.setState(.stop)
        }
    }

    @Test("EAGAIN on a data fd waits with poll, then retries")
    func againWaitsWithPoll() throws {
        let fixture = try KernelFixture()
        let saveFD = try #require(try fixture.device.setState(.preCopy))
        fixture.recorder.clearRecords()
        fixture.recorder.inject(.resourceTemporarilyUnavailable, on: .read)
        #expect(try saveFD.readChunk(64).bytes.count == 24)
        #expect(fixture.recorder.records.map(\.kind) == [.read, .poll, .read])
        #expect(fixture.recorder.records[1].call == .poll(events: 1))

        let destination = try KernelFixture()
        let resumeFD = try #require(try destination.device.setState(.resuming))
        destination.recorder.clearRecords()
        destination.recorder.inject(.resourceTemporarilyUnavailable, on: .write)
        try resumeFD.write(SimulatedDriverState.mttyHeader(ports: 2))
        #expect(destination.recorder.records.map(\.kind) == [.write, .poll, .write])
        #expect(destination.recorder.records[1].call == .poll(events: 4))
    }

    @Test("Partial writes continue where the kernel stopped")
    func partialWritesComplete() throws {
        let fixture = try KernelFixture()
        let resumeFD = try #require(try fixture.device.setState(.resuming))
        fixture.recorder.clearRecords()
        fixture.recorder.limitTransfers(on: .write, to: 5, times: 3)
        let blob = SimulatedVFIODevice.mttyBlob(ports: 2, portBytes: [UInt8](repeating: 7, count: 72))
        try resumeFD.write(blob)
        #expect(fixture.recorder.records.map(\.call) == [.write(count: 96), .write(count: 91), .write(count: 86), .write(count: 81)])
        #expect(fixture.recorder.records.map(\.result) == [.success(5), .success(5), .success(5), .success(81)])
        try fixture.device.setState(.stop)
    }

    @Test("PRECOPY_INFO errors: EINVAL is 'not in PRE_COPY', ENOTTY 'unsupported', EIO a failure")
    func precopyInfoErrors() throws {
        let fixture = try KernelFixture()
        let saveFD = try #require(try fixture.device.setState(.preCopy))
        fixture.recorder.inject(.invalidArgument, on: .ioctl, request: 0x3B79)
        #expect(throws: VFIOError.notInPreCopy(device: "0000:3b:00.2")) { try saveFD.precopyInfo() }
        fixture.recorder.inject(.inappropriateIOCTLForDevice, on: .ioctl, request: 0x3B79)
        #expect(throws: VFIOError.featureUnsupported(operation: .precopyInfo, device: "0000:3b:00.2", errno: .inappropriateIOCTLForDevice))
        {
            try saveFD.precopyInfo()
        }
        fixture.recorder.inject(.ioError, on: .ioctl, request: 0x3B79)
        #expect(throws: VFIOError.syscallFailed(operation: .precopyInfo, device: "0000:3b:00.2", errno: .ioError)) {
            try saveFD.precopyInfo()
        }
    }

    @Test("Read and write errors carry the operation, the device and the errno")
    func dataErrorsAreTyped() throws {
        let fixture = try KernelFixture()
        let saveFD = try #require(try fixture.device.setState(.preCopy))
        fixture.recorder.inject(.ioError, on: .read)
        #expect(throws: VFIOError.syscallFailed(operation: .read, device: "0000:3b:00.2", errno: .ioError)) { try saveFD.readChunk(8) }
        fixture.recorder.inject(.noMessage, on: .read)
        #expect(try saveFD.readChunk(8).result == .drainedForNow)
        let error = VFIOError.syscallFailed(operation: .read, device: "0000:3b:00.2", errno: .ioError)
        #expect(error.description == "0000:3b:00.2: read of the migration data fd failed: Input/output error (errno 5)")
    }

    @Test("stopCopySize: ENOTTY is 'unsupported', EIO a failure")
    func stopCopySizeErrors() throws {
        let fixture = try KernelFixture()
        fixture.recorder.inject(.inappropriateIOCTLForDevice, on: .ioctl, request: 0x3B75)
        #expect(throws: VFIOError.featureUnsupported(operation: .stopCopySize, device: "0000:3b:00.2", errno: .inappropriateIOCTLForDevice))
        {
            try fixture.device.stopCopySize()
        }
        fixture.recorder.inject(.ioError, on: .ioctl, request: 0x3B75)
        #expect(throws: VFIOError.syscallFailed(operation: .stopCopySize, device: "0000:3b:00.2", errno: .ioError)) {
            try fixture.device.stopCopySize()
        }
    }

    @Test("Closing the device closes the device fd first, then the group and the container")
    func closeOrder() throws {
        let fixture = try KernelFixture(access: .group)
        let opens = fixture.recorder.records.filter { $0.kind == .open }.compactMap { try? $0.result.get() }.map(Int32.init)
        let deviceFD = fixture.deviceFD
        fixture.recorder.clearRecords()
        try fixture.device.close()
        #expect(fixture.recorder.records.map(\.fd) == [deviceFD, opens[1], opens[0]])
        #expect(fixture.driver.currentState == .running)
    }

    // MARK: End to end

    @Test("The same client code migrates mtty between two kernel-backed devices byte-identically")
    func kernelToKernelMigration() throws {
        let source = try KernelFixture(configuration: .mtty(seed: 1))
        let destination = try KernelFixture(configuration: .mtty(seed: 2))
        let saveFD = try #require(try source.device.setState(.preCopy))
        let resumeFD = try #require(try destination.device.setState(.resuming))
        var stream: [UInt8] = []
        while true {
            let (result, bytes) = try saveFD.readChunk(1 << 20)
            stream += bytes
            if result == .drainedForNow {
                #expect(try saveFD.precopyInfo() == VFIOPrecopyInfo(initialBytes: 0, dirtyBytes: 0))
                try source.device.setState(.stopCopy)
            } else if result == .endOfStream {
                break
            }
        }
        try resumeFD.write(stream)
        try destination.device.setState(.stop)
        try destination.device.setState(.running)
        try source.device.setState(.running)
        #expect(stream.count == 96)
        #expect(
            source.driver.recordedArcs.map(\.description)
                == [
                    "RUNNING→PRE_COPY", "PRE_COPY→PRE_COPY_P2P", "PRE_COPY_P2P→STOP_COPY", "STOP_COPY→STOP", "STOP→RUNNING_P2P",
                    "RUNNING_P2P→RUNNING"
                ])
        #expect(destination.driver.state.withLock { $0.mttyPorts } == source.driver.state.withLock { $0.mttyPorts })
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}
