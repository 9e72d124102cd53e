import Foundation
import PCIDiscovery
import SystemPackage
import Testing
import VFIO
import VFIOSimulator

/// What the simulated host does not model, in front of it: an open that fails (a group a VM holds)
/// and groups that are not viable (GET_STATUS without VIABLE; SET_CONTAINER fails EBUSY, as when a
/// device of the group is bound to a host driver).
struct HostFaults: VFIOForwardingSyscalls {
    let base: any VFIOSyscalls
    var openErrors: [String: Errno] = [:]
    var groupsViable = true

    func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
        openErrors[path].map { .failure($0) } ?? base.open(path, flags)
    }

    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        guard !groupsViable else { return base.ioctl(fd, request, argument) }
        if request == VFIOUAPI.groupSetContainer { return .failure(.resourceBusy) }
        let result = base.ioctl(fd, request, argument)
        if request == VFIOUAPI.groupGetStatus, case .buffer(let status) = argument, status.count >= 8 {
            status[4] &= ~UInt8(VFIOUAPI.groupFlagViable)
        }
        return result
    }

}

/// A simulated host with the device 0000:3b:00.1 in IOMMU group 42 (cdev vfio3), and the probe's
/// calls recorded.
struct ProbeFixture {
    let host: SimulatedVFIOHost
    let recorder: VFIOSyscallRecorder
    let probe: VFIOMigrationProbe

    init(
        cdev: Bool = false, devRoot: String = "/simulated/dev", migration: VFIOMigrationFlags? = [.stopCopy, .p2p, .preCopy],
        dmaLogging: Bool = false, type1MigrationCapability: Bool = true, iommuDirtyTracking: Bool = false,
        faults: (any VFIOSyscalls) -> any VFIOSyscalls = { $0 }
    ) {
        host = SimulatedVFIOHost(
            paths: VFIOHostPaths(sysfsRoot: "/simulated/sys", devRoot: devRoot), cdevSupport: cdev,
            type1MigrationCapability: type1MigrationCapability)
        var configuration = SimulatedVFIOConfiguration.mlx5()
        configuration.migration = migration
        configuration.dmaLogging = dmaLogging
        configuration.iommuDirtyTracking = iommuDirtyTracking
        host.addDevice(.pci("0000:3b:00.1"), group: 42, cdevIndex: 3, configuration: configuration, clock: ManualSimulationClock())
        recorder = VFIOSyscallRecorder(base: faults(host))
        probe = VFIOMigrationProbe(paths: host.paths, system: recorder)
    }

    /// The calls, with fds named by the node they were opened from (`device` for GET_DEVICE_FD's).
    var trace: [String] {
        var names: [Int32: String] = [:]
        return recorder.records.map { record in
            let name = record.fd.flatMap { names[$0] } ?? "?"
            let failure = if case .failure(let errno) = record.result { " = \(errno.rawValue)" } else { "" }
            switch record.call {
            case .open(let path, _):
                if case .success(let fd) = record.result { names[Int32(fd)] = path }
                return "open \(path)\(failure)"
            case .ioctl(let request, let argument):
                if request == VFIOUAPI.groupGetDeviceFD, case .success(let fd) = record.result { names[Int32(fd)] = "device" }
                let value = if case .value(let value) = argument { " \(value)" } else { "" }
                return "ioctl \(name) 0x\(String(request, radix: 16))\(value)\(failure)"
            case .close: return "close \(name)"
            case .readlink(let path): return "readlink \(path)"
            case .listDirectory(let path): return "list \(path)\(failure)"
            default: return "\(record.call)"
            }
        }
    }
}

@Suite("The --probe ioctl sequence, on the VFIO module's simulated host")
struct VFIOMigrationProbeTests {
    func device(group: Int? = 42, cdev: String? = nil) throws -> PCIDevice {
        PCIDevice(
            address: try address("0000:3b:00.1"), vendorID: 0x15b3, deviceID: 0x101e, classCode: 0x020000,
            driver: "mlx5_vfio_pci", iommuGroup: group, vfioCdevName: cdev)
    }

    @Test("group path: container, group, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD, FEATURE ×2; all closed")
    func groupPath() throws {
        let fixture = ProbeFixture()
        #expect(fixture.probe.probe(try device()) == .supported([.stopCopy, .p2p, .preCopy]))
        #expect(
            fixture.trace == [
                "readlink /simulated/sys/bus/pci/devices/0000:3b:00.1/iommu_group",
                "open /simulated/dev/vfio/vfio",
                "ioctl /simulated/dev/vfio/vfio 0x3b64",
                "open /simulated/dev/vfio/42",
                "ioctl /simulated/dev/vfio/42 0x3b67",
                "ioctl /simulated/dev/vfio/42 0x3b68",
                "ioctl /simulated/dev/vfio/vfio 0x3b65 3",
                "ioctl /simulated/dev/vfio/vfio 0x3b66 3",
                "ioctl /simulated/dev/vfio/42 0x3b6a",
                "ioctl device 0x3b75",
                "ioctl device 0x3b75 = 25",
                // IOMMU dirty tracking: VFIO_IOMMU_GET_INFO at 24 bytes, then at the 72 it asks for.
                "ioctl /simulated/dev/vfio/vfio 0x3b70",
                "ioctl /simulated/dev/vfio/vfio 0x3b70",
                "close device",
                "close /simulated/dev/vfio/42",
                "close /simulated/dev/vfio/vfio"
            ])
        // struct vfio_device_feature { argsz 16; flags GET | MIGRATION } + u64 migration_flags, then
        // { argsz 8; flags PROBE | SET | DMA_LOGGING_START } without a payload.
        let features = fixture.recorder.ioctls.dropLast(2).suffix(2).map(\.argumentBytes)
        #expect(
            features == [
                [16, 0, 0, 0, 0x01, 0, 0x01, 0] + [UInt8](repeating: 0, count: 8),
                [8, 0, 0, 0, 0x06, 0, 0x06, 0]
            ])
    }

    @Test("examine: IOMMU dirty tracking from the type1 container's GET_INFO or the cdev's HWPT")
    func iommuTracking() throws {
        let old = ProbeFixture(type1MigrationCapability: false)
        #expect(
            old.probe.examine(try device()).iommuDirtyTracking
                == .unsupported(reason: "no migration capability in VFIO_IOMMU_GET_INFO (a type1 driver older than 5.8)"))
        let dirty = ProbeFixture(cdev: true, iommuDirtyTracking: true)
        #expect(dirty.probe.examine(try device(cdev: "vfio3")).iommuDirtyTracking == .iommufd)
        let plain = ProbeFixture(cdev: true)
        guard case .unsupported(let reason)? = plain.probe.examine(try device(cdev: "vfio3")).iommuDirtyTracking else {
            Issue.record("a cdev without an IOMMU that tracks offered IOMMU tracking")
            return
        }
        #expect(reason.contains("IOMMU_HWPT_ALLOC"))
        // What devprobe shows: the tracking a VMM would use, in QEMU's order.
        let none = MigrationVerdict(
            isMigratable: true, dirtyTracking: .init(kind: .none, source: .probe),
            iommuDirtyTracking: .init(kind: .none, detail: reason))
        #expect(none.trackingOffered == MigrationVerdict.TrackingOffered.none)
        #expect(
            MigrationVerdict(isMigratable: true, dirtyTracking: .init(kind: .none, source: .probe), iommuDirtyTracking: .init(kind: .type1))
                .trackingOffered == .iommuType1)
        #expect(
            MigrationVerdict(
                isMigratable: true, dirtyTracking: .init(kind: .dmaLogging, source: .probe), iommuDirtyTracking: .init(kind: .iommufd)
            ).trackingOffered == .deviceDMALogging)
        #expect(MigrationVerdict(isMigratable: true).trackingOffered == nil)
    }

    @Test("examine: migration flags and DMA logging from one open; a device without log ops answers ENOTTY")
    func examine() throws {
        let logging = ProbeFixture(migration: [.stopCopy, .p2p], dmaLogging: true)
        #expect(
            logging.probe.examine(try device())
                == VFIODeviceProbeResult(migration: .supported([.stopCopy, .p2p]), dmaLogging: .supported, iommuDirtyTracking: .type1))
        #expect(logging.trace.filter { $0.hasPrefix("open") }.count == 2)
        let plain = ProbeFixture(migration: nil)
        #expect(
            plain.probe.examine(try device())
                == VFIODeviceProbeResult(
                    migration: .unsupported(.inappropriateIOCTLForDevice), dmaLogging: .unsupported(.inappropriateIOCTLForDevice),
                    iommuDirtyTracking: .type1))
        let busy = ProbeFixture { HostFaults(base: $0, openErrors: ["/simulated/dev/vfio/42": .resourceBusy]) }
        #expect(busy.probe.examine(try device()).dmaLogging == nil)
    }

    @Test("a DMA-logging PROBE that fails otherwise is a failure that names the ioctl")
    func dmaLoggingFailure() throws {
        let fixture = ProbeFixture(dmaLogging: true)
        fixture.recorder.inject(.ioError, on: .ioctl, request: VFIOUAPI.deviceFeature, times: 2)
        let result = fixture.probe.examine(try device())
        #expect(result.migration == .failed(reason: "VFIO_DEVICE_FEATURE(MIGRATION): Input/output error"))
        #expect(result.dmaLogging == .failed(reason: "VFIO_DEVICE_FEATURE(PROBE DMA_LOGGING_START): Input/output error"))
        #expect(fixture.trace.last == "close /simulated/dev/vfio/vfio")
    }

    @Test(
        "ENOTTY and EINVAL mean unsupported; other errnos are failures",
        arguments: [
            (ENOTTY, VFIOProbeOutcome.unsupported(.inappropriateIOCTLForDevice)),
            (EINVAL, VFIOProbeOutcome.unsupported(.invalidArgument)),
            (EIO, VFIOProbeOutcome.failed(reason: "VFIO_DEVICE_FEATURE(MIGRATION): Input/output error"))
        ])
    func featureErrors(err: Int32, outcome: VFIOProbeOutcome) throws {
        let fixture = ProbeFixture()
        fixture.recorder.inject(Errno(rawValue: err), on: .ioctl, request: VFIOUAPI.deviceFeature)
        #expect(fixture.probe.probe(try device()) == outcome)
    }

    @Test("a device without migration answers ENOTTY: unsupported")
    func deviceWithoutMigration() throws {
        let fixture = ProbeFixture(migration: nil)
        #expect(fixture.probe.probe(try device()) == .unsupported(.inappropriateIOCTLForDevice))
    }

    @Test("a busy group and a group that is not viable are failures that say so")
    func groupFailures() throws {
        let busy = ProbeFixture { HostFaults(base: $0, openErrors: ["/simulated/dev/vfio/42": .resourceBusy]) }
        #expect(
            busy.probe.probe(try device())
                == .failed(reason: "open /simulated/dev/vfio/42: Device or resource busy (in use, e.g. by a running VM)"))
        #expect(busy.trace.last == "close /simulated/dev/vfio/vfio")
        let split = ProbeFixture { HostFaults(base: $0, groupsViable: false) }
        guard case .failed(let reason) = split.probe.probe(try device()) else {
            Issue.record("expected a failure")
            return
        }
        #expect(reason.hasPrefix("IOMMU group 42 is not viable"))
        #expect(split.trace.suffix(2) == ["close /simulated/dev/vfio/42", "close /simulated/dev/vfio/vfio"])
    }

    @Test("cdev path when there is no group node: iommufd, IOAS, device, BIND_IOMMUFD, HWPT_ALLOC (dirty), ATTACH, FEATURE ×2")
    func cdevPath() throws {
        let fixture = ProbeFixture(cdev: true)
        #expect(fixture.probe.probe(try device(cdev: "vfio3")) == .supported([.stopCopy, .p2p, .preCopy]))
        #expect(
            fixture.trace == [
                "list /simulated/sys/bus/pci/devices/0000:3b:00.1/vfio-dev",
                "open /simulated/dev/iommu",
                "ioctl /simulated/dev/iommu 0x3b81",
                "open /simulated/dev/vfio/devices/vfio3",
                "ioctl /simulated/dev/vfio/devices/vfio3 0x3b76",
                "ioctl /simulated/dev/iommu 0x3b89 = 95",
                "ioctl /simulated/dev/vfio/devices/vfio3 0x3b77",
                "ioctl /simulated/dev/vfio/devices/vfio3 0x3b75",
                "ioctl /simulated/dev/vfio/devices/vfio3 0x3b75 = 25",
                "close /simulated/dev/vfio/devices/vfio3",
                "close /simulated/dev/iommu"
            ])
    }

    @Test("with both a group node and a cdev, the group is used")
    func groupNodePreferred() throws {
        let devRoot = FileManager.default.temporaryDirectory.appendingPathComponent("probe-dev-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: devRoot) }
        try FileManager.default.createDirectory(at: devRoot.appendingPathComponent("vfio"), withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: devRoot.appendingPathComponent("vfio/42").path, contents: nil))
        let fixture = ProbeFixture(cdev: true, devRoot: devRoot.path)
        #expect(fixture.probe.probe(try device(cdev: "vfio3")) == .supported([.stopCopy, .p2p, .preCopy]))
        #expect(fixture.trace.contains("open \(devRoot.path)/vfio/42"))
        #expect(!fixture.trace.contains { $0.hasPrefix("open \(devRoot.path)/iommu") })
    }

    @Test("without a group or a cdev there is nothing to open")
    func nothingToOpen() throws {
        let fixture = ProbeFixture()
        #expect(fixture.probe.probe(try device(group: nil)) == .failed(reason: "no IOMMU group and no VFIO character device"))
        #expect(fixture.recorder.records.isEmpty)
    }

    @Test("on this machine the real probe fails cleanly (no /dev/vfio)")
    func realSystem() throws {
        guard access("/dev/vfio/vfio", F_OK) != 0 else { return }
        guard case .failed = VFIOMigrationProbe().probe(try device()) else {
            Issue.record("expected a failure without /dev/vfio")
            return
        }
    }

    @Test("flag names")
    func flagNames() {
        #expect(VFIOMigrationFlags([.stopCopy, .p2p, .preCopy]).description == "STOP_COPY|P2P|PRE_COPY")
        #expect(VFIOMigrationFlags(rawValue: 0x11).names == ["STOP_COPY", "0x10"])
        // No flags read "none" in devprobe's reasons: MigrationVerdictTests.probedFlagsWithoutStopCopy.
        #expect(VFIOMigrationFlags().names.isEmpty)
    }
}
