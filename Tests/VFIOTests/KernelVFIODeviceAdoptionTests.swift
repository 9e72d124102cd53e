import Foundation
import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

/// A VMM that opened its device itself, as QEMU does, on a simulated host: the fds it holds.
struct VMMHeldDevice {
    let host: SimulatedVFIOHost
    let driver: SimulatedVFIODriver
    let deviceFD: Int32
    let iommu: VFIOIOMMUContext

    static let address = VFIODeviceAddress.pci("0000:3b:00.2")

    /// Opens the cdev, binds it to a fresh iommufd and attaches it to an IOAS (`bind: false`
    /// leaves the cdev unbound).
    static func cdev(bind: Bool = true) throws -> VMMHeldDevice {
        let host = SimulatedVFIOHost(cdevSupport: true)
        let driver = host.addDevice(address, group: 12, cdevIndex: 0, configuration: .mtty(), clock: ManualSimulationClock())
        let flags = O_RDWR | O_CLOEXEC
        let iommufd = try host.open("/simulated/dev/iommu", flags).get()
        var alloc = IOMMUIOASAlloc().bytes
        _ = try alloc.withUnsafeMutableBytes { host.ioctl(iommufd, VFIOUAPI.iommuIOASAlloc, .buffer($0)) }.get()
        let ioas = try #require(IOMMUIOASAlloc(bytes: alloc)).outIOASID
        let device = try host.open("/simulated/dev/vfio/devices/vfio0", flags).get()
        if bind {
            var bindBytes = VFIODeviceBindIOMMUFD(iommufd: iommufd).bytes
            _ = try bindBytes.withUnsafeMutableBytes { host.ioctl(device, VFIOUAPI.deviceBindIOMMUFD, .buffer($0)) }.get()
            var attach = VFIODeviceAttachIOMMUFDPT(ptID: ioas).bytes
            _ = try attach.withUnsafeMutableBytes { host.ioctl(device, VFIOUAPI.deviceAttachIOMMUFDPT, .buffer($0)) }.get()
        }
        return VMMHeldDevice(host: host, driver: driver, deviceFD: device, iommu: .iommufd(FileDescriptor(rawValue: iommufd), ioasID: ioas))
    }

    /// Opens the container and the group, sets the IOMMU and asks the group for the device fd.
    static func group() throws -> VMMHeldDevice {
        let host = SimulatedVFIOHost()
        let driver = host.addDevice(address, group: 12, cdevIndex: nil, configuration: .mtty(), clock: ManualSimulationClock())
        let flags = O_RDWR | O_CLOEXEC
        let container = try host.open("/simulated/dev/vfio/vfio", flags).get()
        let group = try host.open("/simulated/dev/vfio/12", flags).get()
        var containerArgument: [UInt8] = []
        LittleEndianBytes.append(container, to: &containerArgument)
        _ = try containerArgument.withUnsafeMutableBytes { host.ioctl(group, VFIOUAPI.groupSetContainer, .buffer($0)) }.get()
        _ = try host.ioctl(container, VFIOUAPI.setIOMMU, .value(VFIOUAPI.type1v2IOMMU)).get()
        var name = Array(address.name.utf8) + [0]
        let device = try name.withUnsafeMutableBytes { host.ioctl(group, VFIOUAPI.groupGetDeviceFD, .buffer($0)) }.get()
        return VMMHeldDevice(
            host: host, driver: driver, deviceFD: device,
            iommu: .container(container: FileDescriptor(rawValue: container), group: FileDescriptor(rawValue: group)))
    }

    var allFDs: [Int32] {
        switch iommu {
        case .container(let c, let g): [deviceFD, c.rawValue, g.rawValue]
        case .iommufd(let fd, _): [deviceFD, fd.rawValue]
        }
    }

    /// Whether `fd` is open in this process (a closed number may be reused by a test running
    /// beside: only "open" means something, and the recorder tells what was closed).
    static func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }
}

@Suite("Kernel-backed device: adopting the VMM's open device fd")
struct KernelVFIODeviceAdoptionTests {
    @Test("A bound cdev is adopted with no open: GET_INFO, then migration ioctls on the VMM's own fd", arguments: [false, true])
    func adoptsABoundCDev(group: Bool) throws {
        let vmm = try group ? VMMHeldDevice.group() : VMMHeldDevice.cdev()
        let recorder = VFIOSyscallRecorder(base: vmm.host)
        let device = try KernelVFIODevice.adopting(
            deviceFD: FileDescriptor(rawValue: vmm.deviceFD), name: "0000:3b:00.2",
            iommu: vmm.iommu, ownership: .borrowed, system: recorder)
        #expect(device.openPath == .adopted)
        #expect(device.iommu == vmm.iommu)
        #expect(device.deviceFileDescriptor?.rawValue == vmm.deviceFD)
        // A 24-byte VFIO_DEVICE_GET_INFO on the VMM's fd, and nothing else.
        #expect(recorder.records.count == 1)
        #expect(recorder.records.first?.fd == vmm.deviceFD)
        #expect(recorder.records.first?.call == .ioctl(request: 0x3B6B, argument: .bytes([24] + [UInt8](repeating: 0, count: 23))))

        // The migration runs on that fd.
        #expect(try device.migrationFlags() == [.stopCopy, .p2p, .preCopy])
        let saveFD = try device.setState(.preCopy)
        let saveRaw = saveFD?.fileDescriptor?.rawValue
        #expect(saveRaw != nil)
        try device.setState(.preCopyP2P)
        try device.setState(.stopCopy)
        #expect(vmm.driver.currentState == .stopCopy)
        try saveFD?.close()
        try device.setState(.running)
        #expect(!recorder.records.contains { $0.kind == .open })
        #expect(recorder.records.allSatisfy { $0.fd == vmm.deviceFD || $0.fd == saveRaw }, "\(recorder.records)")
    }

    @Test("Closing a borrowed device leaves every fd of the VMM open")
    func borrowedFDsStayOpen() throws {
        let vmm = try VMMHeldDevice.cdev()
        let recorder = VFIOSyscallRecorder(base: vmm.host)
        let device = try KernelVFIODevice.adopting(
            deviceFD: FileDescriptor(rawValue: vmm.deviceFD), name: "0000:3b:00.2",
            iommu: vmm.iommu, ownership: .borrowed, system: recorder)
        try device.close()
        #expect(device.deviceFileDescriptor == nil)
        #expect(!recorder.records.contains { $0.call == .close })
        #expect(vmm.allFDs.allSatisfy(VMMHeldDevice.isOpen))
        // The VMM still drives its device.
        #expect(vmm.driver.currentState == .running)
        for fd in vmm.allFDs { _ = vmm.host.close(fd) }
    }

    @Test("A transferred device closes the device fd first, then the IOMMU fds")
    func transferredFDsAreClosed() throws {
        let vmm = try VMMHeldDevice.group()
        let recorder = VFIOSyscallRecorder(base: vmm.host)
        let device = try KernelVFIODevice.adopting(
            deviceFD: FileDescriptor(rawValue: vmm.deviceFD), name: "0000:3b:00.2",
            iommu: vmm.iommu, ownership: .transferred, system: recorder)
        try device.close()
        let closed = recorder.records.filter { $0.call == .close }.compactMap(\.fd)
        guard case .container(let container, let group) = vmm.iommu else {
            Issue.record("not a container")
            return
        }
        #expect(closed == [vmm.deviceFD, group.rawValue, container.rawValue])
    }

    @Test("A cdev not yet bound to an iommufd is refused, says why, and stays open")
    func anUnboundCDevIsRefused() throws {
        let vmm = try VMMHeldDevice.cdev(bind: false)
        let recorder = VFIOSyscallRecorder(base: vmm.host)
        do {
            _ = try KernelVFIODevice.adopting(
                deviceFD: FileDescriptor(rawValue: vmm.deviceFD), name: "0000:3b:00.2",
                iommu: vmm.iommu, ownership: .transferred, system: recorder)
            Issue.record("an unbound cdev was adopted")
        } catch {
            guard case .deviceNotFound(let name, let detail) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(name == "0000:3b:00.2")
            #expect(detail.contains("VFIO_DEVICE_GET_INFO: "), "\(detail)")
            #expect(detail.contains("VFIO_DEVICE_BIND_IOMMUFD"), "\(detail)")
        }
        // Even a transferred fd stays the caller's when the adoption fails.
        #expect(!recorder.records.contains { $0.kind == .close })
        #expect(vmm.allFDs.allSatisfy(VMMHeldDevice.isOpen))
        for fd in vmm.allFDs { _ = vmm.host.close(fd) }
    }

    @Test("A fd that is no VFIO device is refused")
    func aPipeIsRefused() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { for fd in ends { close(fd) } }
        #expect(throws: VFIOError.self) {
            try KernelVFIODevice.adopting(
                deviceFD: FileDescriptor(rawValue: ends[0]), name: "0000:3b:00.2",
                iommu: .iommufd(FileDescriptor(rawValue: ends[1]), ioasID: nil))
        }
        #expect(throws: VFIOError.deviceNotFound(device: "x", detail: "a negative fd was given to adopt")) {
            try KernelVFIODevice.adopting(
                deviceFD: FileDescriptor(rawValue: -1), name: "x", iommu: .iommufd(FileDescriptor(rawValue: 3), ioasID: nil))
        }
        #expect(VMMHeldDevice.isOpen(ends[0]) && VMMHeldDevice.isOpen(ends[1]))
    }

    @Test("A device opened by address exposes the container or the iommufd it opened", arguments: [false, true])
    func openedDevicesExposeTheirIOMMU(cdev: Bool) throws {
        let fixture = try KernelFixture(cdev: cdev)
        let opens = fixture.recorder.records.filter { $0.kind == .open }.compactMap { try? $0.result.get() }.map(Int32.init)
        if cdev {
            #expect(fixture.device.iommu == .iommufd(FileDescriptor(rawValue: opens[0]), ioasID: 1))
        } else {
            // The failed /dev/iommu open has no fd: container, then group.
            #expect(
                fixture.device.iommu == .container(container: FileDescriptor(rawValue: opens[0]), group: FileDescriptor(rawValue: opens[1]))
            )
        }
        #expect(fixture.device.ownership == .transferred)
    }
}
