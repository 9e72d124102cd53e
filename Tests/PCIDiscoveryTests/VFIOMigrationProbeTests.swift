import Foundation
@testable import PCIDiscovery
import Testing

/// Records the probe's system calls and answers them from a script.
final class FakeProbeSystem: VFIOProbeSystem, @unchecked Sendable {
    private let lock = NSLock()
    private var _calls: [String] = []
    var calls: [String] { lock.withLock { _calls } }
    /// Paths whose open fails with this errno.
    var openErrors: [String: Int32] = [:]
    var groupFlags: UInt32 = 1
    var featureResult: Int32 = 0
    var migrationFlags: UInt64 = 0b111
    private var nextFD: Int32 = 10
    private var names: [Int32: String] = [:]

    private func record(_ call: String) { lock.withLock { _calls.append(call) } }

    func open(_ path: String, _ flags: Int32) -> Int32 {
        record("open \(path)")
        if let err = openErrors[path] { return -err }
        return lock.withLock {
            nextFD += 1
            names[nextFD] = path
            return nextFD
        }
    }

    func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer?) -> Int32 {
        let name = lock.withLock { names[fd] ?? "?" }
        record("ioctl \(name) 0x\(String(request, radix: 16))")
        switch request {
        case VFIOMigrationProbe.getAPIVersion: return 0
        case VFIOMigrationProbe.groupGetStatus:
            arg?.storeBytes(of: groupFlags, toByteOffset: 4, as: UInt32.self)
            return 0
        case VFIOMigrationProbe.groupGetDeviceFD:
            let device = arg.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? ""
            return self.open("device \(device)", 0)
        case VFIOMigrationProbe.deviceFeature:
            guard let arg else { return -EFAULT }
            #expect(arg.load(fromByteOffset: 0, as: UInt32.self) == 16)
            #expect(arg.load(fromByteOffset: 4, as: UInt32.self) == 0x10001)
            if featureResult < 0 { return featureResult }
            arg.storeBytes(of: migrationFlags, toByteOffset: 8, as: UInt64.self)
            return 0
        default: return 0
        }
    }

    func ioctl(_ fd: Int32, _ request: UInt, value: Int) -> Int32 {
        let name = lock.withLock { names[fd] ?? "?" }
        record("ioctl \(name) 0x\(String(request, radix: 16)) \(value)")
        return request == VFIOMigrationProbe.checkExtension ? 1 : 0
    }

    func close(_ fd: Int32) {
        let name = lock.withLock { names[fd] ?? "?" }
        record("close \(name)")
    }
}

@Suite("The --probe ioctl sequence, without /dev/vfio")
struct VFIOMigrationProbeTests {
    func device(group: Int? = 42, cdev: String? = nil) throws -> PCIDevice {
        PCIDevice(address: try address("0000:3b:00.1"), vendorID: 0x15b3, deviceID: 0x101e, classCode: 0x020000,
                  driver: "mlx5_vfio_pci", iommuGroup: group, vfioCdevName: cdev)
    }

    @Test("group path: container, group, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD, FEATURE; all closed")
    func groupPath() throws {
        let system = FakeProbeSystem()
        let probe = VFIOMigrationProbe(system: system, devRoot: "/fake/dev")
        #expect(probe.probe(try device()) == .supported([.stopCopy, .p2p, .preCopy]))
        #expect(system.calls == [
            "open /fake/dev/vfio/vfio",
            "ioctl /fake/dev/vfio/vfio 0x3b64",
            "ioctl /fake/dev/vfio/vfio 0x3b65 3",
            "open /fake/dev/vfio/42",
            "ioctl /fake/dev/vfio/42 0x3b67",
            "ioctl /fake/dev/vfio/42 0x3b68",
            "ioctl /fake/dev/vfio/vfio 0x3b66 3",
            "ioctl /fake/dev/vfio/42 0x3b6a",
            "open device 0000:3b:00.1",
            "ioctl device 0000:3b:00.1 0x3b75",
            "close device 0000:3b:00.1",
            "close /fake/dev/vfio/42",
            "close /fake/dev/vfio/vfio",
        ])
    }

    @Test("ENOTTY and EINVAL mean unsupported; other errnos are failures", arguments: [
        (ENOTTY, VFIOProbeOutcome.unsupported(errno: ENOTTY)),
        (EINVAL, VFIOProbeOutcome.unsupported(errno: EINVAL)),
        (EIO, VFIOProbeOutcome.failed(reason: "VFIO_DEVICE_FEATURE(MIGRATION): Input/output error")),
    ])
    func featureErrors(err: Int32, outcome: VFIOProbeOutcome) throws {
        let system = FakeProbeSystem()
        system.featureResult = -err
        #expect(VFIOMigrationProbe(system: system, devRoot: "/fake/dev").probe(try device()) == outcome)
    }

    @Test("a busy group and a group that is not viable are failures that say so")
    func groupFailures() throws {
        let busy = FakeProbeSystem()
        busy.openErrors["/fake/dev/vfio/42"] = EBUSY
        #expect(VFIOMigrationProbe(system: busy, devRoot: "/fake/dev").probe(try device())
            == .failed(reason: "open /fake/dev/vfio/42: Device or resource busy (in use, e.g. by a running VM)"))
        #expect(busy.calls.last == "close /fake/dev/vfio/vfio")
        let split = FakeProbeSystem()
        split.groupFlags = 0
        guard case .failed(let reason) = VFIOMigrationProbe(system: split, devRoot: "/fake/dev").probe(try device()) else {
            Issue.record("expected a failure")
            return
        }
        #expect(reason.hasPrefix("IOMMU group 42 is not viable"))
    }

    @Test("cdev path when there is no group node: iommufd, device, BIND_IOMMUFD, FEATURE")
    func cdevPath() throws {
        let system = FakeProbeSystem()
        let probe = VFIOMigrationProbe(system: system, devRoot: "/nonexistent-dev")
        #expect(probe.probe(try device(cdev: "vfio3")) == .supported([.stopCopy, .p2p, .preCopy]))
        #expect(system.calls == [
            "open /nonexistent-dev/iommu",
            "open /nonexistent-dev/vfio/devices/vfio3",
            "ioctl /nonexistent-dev/vfio/devices/vfio3 0x3b76",
            "ioctl /nonexistent-dev/vfio/devices/vfio3 0x3b75",
            "close /nonexistent-dev/vfio/devices/vfio3",
            "close /nonexistent-dev/iommu",
        ])
    }

    @Test("without a group or a cdev there is nothing to open")
    func nothingToOpen() throws {
        #expect(VFIOMigrationProbe(system: FakeProbeSystem(), devRoot: "/fake/dev").probe(try device(group: nil))
            == .failed(reason: "no IOMMU group and no VFIO character device"))
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
        #expect(VFIOMigrationFlags().description == "none")
    }
}
