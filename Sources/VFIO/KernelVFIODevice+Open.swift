import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The steps that find a device in sysfs and obtain its fd (reference §3).
struct VFIODeviceOpener {
    let address: VFIODeviceAddress
    let paths: VFIOHostPaths
    let system: any VFIOSyscalls

    var name: String { address.name }
    private var openFlags: Int32 { Int32(O_RDWR) | Int32(O_CLOEXEC) }

    // MARK: sysfs

    /// The IOMMU group number: the last component of the `iommu_group` link.
    func groupNumber() throws(VFIOError) -> Int {
        let link = address.sysfsDirectory(in: paths.sysfsRoot) + "/iommu_group"
        switch system.readlink(link) {
        case .success(let target):
            guard let last = target.split(separator: "/").last, let number = Int(last) else {
                throw VFIOError.deviceNotFound(device: name, detail: "\(link) points to \(target), not an IOMMU group")
            }
            return number
        case .failure(let errno):
            throw VFIOError.deviceNotFound(
                device: name, detail: "no IOMMU group at \(link) (\(errno)); is the device bound to a vfio driver?")
        }
    }

    /// The device's cdev name (`vfioX`) from its `vfio-dev` directory, if the class device exists.
    func cdevName() -> String? {
        let directory = address.sysfsDirectory(in: paths.sysfsRoot) + "/vfio-dev"
        guard case .success(let entries) = system.listDirectory(directory) else { return nil }
        return entries.first { $0.hasPrefix("vfio") }
    }

    // MARK: Helpers

    private func openNode(_ path: String) -> Result<Int32, Errno> { system.openRestarting(path, openFlags) }

    private func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        system.ioctlRestarting(fd, request, argument)
    }

    private func ioctl(_ fd: Int32, _ request: UInt, bytes: inout [UInt8]) -> Result<Int32, Errno> {
        bytes.withUnsafeMutableBytes { ioctl(fd, request, .buffer($0)) }
    }

    /// `open(2)` of a device node; on failure the fds opened so far (`fds`) are closed.
    private func openNode(_ path: String, closing fds: [Int32]) throws(VFIOError) -> Int32 {
        switch openNode(path) {
        case .success(let fd): return fd
        case .failure(let errno): throw fail(.open(path), errno, closing: fds)
        }
    }

    /// The ioctl `request` with `layout` as its argument, which then holds the kernel's answer; on
    /// failure `fds` are closed.
    private func ioctl<Layout: VFIOFixedLayout>(
        _ fd: Int32, _ request: UInt, _ layout: inout Layout, _ operation: VFIOOperation, closing fds: [Int32]
    ) throws(VFIOError) {
        if case .failure(let errno) = system.ioctlRestarting(fd, request, layout: &layout) {
            throw fail(operation, errno, closing: fds)
        }
    }

    private func closeAll(_ fds: [Int32]) {
        for fd in fds.reversed() { _ = system.close(fd) }
    }

    private func fail(_ operation: VFIOOperation, _ errno: Errno, closing fds: [Int32]) -> VFIOError {
        closeAll(fds)
        return VFIOError.syscallFailed(operation: operation, device: name, errno: errno)
    }

    // MARK: Open

    func open(access: VFIODeviceAccess) throws(VFIOError) -> KernelVFIODevice {
        switch access {
        case .group:
            return try openThroughGroup()
        case .cdev:
            guard let cdev = cdevName() else {
                throw VFIOError.deviceNotFound(device: name, detail: "no vfio-dev entry in sysfs (kernel older than 6.1?)")
            }
            return try openThroughCDev(cdev)
        case .automatic:
            // The class device exists from 6.1 even without cdev support; the node tells.
            if let cdev = cdevName(), let device = try? openThroughCDev(cdev) { return device }
            return try openThroughGroup()
        }
    }

    /// /dev/vfio/vfio + /dev/vfio/N: API version, group status, set container, type1v2 IOMMU, device fd.
    func openThroughGroup() throws(VFIOError) -> KernelVFIODevice {
        let group = try groupNumber()
        var fds: [Int32] = []
        let container = try openNode("\(paths.devRoot)/vfio/vfio", closing: fds)
        fds.append(container)
        switch ioctl(container, VFIOUAPI.getAPIVersion, .none) {
        case .success(VFIOUAPI.apiVersion): break
        case .success(let version):
            closeAll(fds)
            throw VFIOError.unexpectedReply(operation: .getAPIVersion, device: name, detail: "API version \(version), expected 0")
        case .failure(let errno): throw fail(.getAPIVersion, errno, closing: fds)
        }

        var noIOMMU = false
        let groupPath = "\(paths.devRoot)/vfio/\(group)"
        let groupFD: Int32
        switch openNode(groupPath) {
        case .success(let fd): groupFD = fd
        case .failure(.noSuchFileOrDirectory):
            groupFD = try openNode("\(paths.devRoot)/vfio/noiommu-\(group)", closing: fds)
            noIOMMU = true
        case .failure(let errno): throw fail(.open(groupPath), errno, closing: fds)
        }
        fds.append(groupFD)

        var status = VFIOGroupStatus()
        try ioctl(groupFD, VFIOUAPI.groupGetStatus, &status, .groupStatus, closing: fds)
        let flags = status.flags
        // Emulated (mdev) groups may report 0 before SET_CONTAINER (Debian's 6.12 says VIABLE) yet work:
        // do not fail on !VIABLE here.
        var containerArgument: [UInt8] = []
        LittleEndianBytes.append(container, to: &containerArgument)
        if flags & VFIOUAPI.groupFlagContainerSet == 0,
            case .failure(let errno) = ioctl(groupFD, VFIOUAPI.groupSetContainer, bytes: &containerArgument)
        {
            closeAll(fds)
            if flags & VFIOUAPI.groupFlagViable == 0 {
                throw VFIOError.deviceNotFound(
                    device: name, detail: "IOMMU group \(group) is not viable (\(errno)): bind every device in it to vfio")
            }
            throw VFIOError.syscallFailed(operation: .setContainer, device: name, errno: errno)
        }

        let iommuType = noIOMMU ? VFIOUAPI.noIOMMU : VFIOUAPI.type1v2IOMMU
        switch ioctl(container, VFIOUAPI.checkExtension, .value(iommuType)) {
        case .success(let supported) where supported > 0: break
        case .success:
            closeAll(fds)
            throw VFIOError.unexpectedReply(
                operation: .checkExtension, device: name, detail: "the container lacks IOMMU type \(iommuType)")
        case .failure(let errno): throw fail(.checkExtension, errno, closing: fds)
        }
        if case .failure(let errno) = ioctl(container, VFIOUAPI.setIOMMU, .value(iommuType)) {
            throw fail(.setIOMMU, errno, closing: fds)
        }

        var deviceName = Array(name.utf8) + [0]
        switch ioctl(groupFD, VFIOUAPI.groupGetDeviceFD, bytes: &deviceName) {
        case .success(let deviceFD):
            return KernelVFIODevice(
                name: name, openPath: .group(number: group, noIOMMU: noIOMMU), deviceFD: deviceFD,
                iommu: .container(container: FileDescriptor(rawValue: container), group: FileDescriptor(rawValue: groupFD)),
                system: system, groupStatusBeforeContainer: flags)
        case .failure(let errno):
            throw fail(.getDeviceFD, errno, closing: fds)
        }
    }

    /// /dev/iommu + /dev/vfio/devices/vfioX: allocate an IOAS, bind the device, attach it.
    func openThroughCDev(_ cdev: String) throws(VFIOError) -> KernelVFIODevice {
        var fds: [Int32] = []
        let iommufd = try openNode("\(paths.devRoot)/iommu", closing: fds)
        fds.append(iommufd)
        var alloc = IOMMUIOASAlloc()
        try ioctl(iommufd, VFIOUAPI.iommuIOASAlloc, &alloc, .allocateIOAS, closing: fds)
        let ioas = alloc.outIOASID

        let deviceFD = try openNode("\(paths.devRoot)/vfio/devices/\(cdev)", closing: fds)
        var bind = VFIODeviceBindIOMMUFD(iommufd: iommufd)
        try ioctl(deviceFD, VFIOUAPI.deviceBindIOMMUFD, &bind, .bindIOMMUFD, closing: fds + [deviceFD])
        // As QEMU (iommufd_cdev_autodomains_get): a HWPT with dirty tracking when the IOMMU has
        // it (EOPNOTSUPP otherwise, hw_pagetable.c), so the IOMMU can log the device's DMA writes.
        let deviceID = bind.outDevID
        var hwpt: UInt32?
        var hwptAlloc = IOMMUHWPTAlloc(flags: VFIOUAPI.hwptAllocDirtyTracking, devID: deviceID, ptID: ioas)
        if case .success = system.ioctlRestarting(iommufd, VFIOUAPI.iommuHWPTAlloc, layout: &hwptAlloc), hwptAlloc.outHWPTID != 0 {
            hwpt = hwptAlloc.outHWPTID
        }
        var attach = VFIODeviceAttachIOMMUFDPT(ptID: hwpt ?? ioas)
        try ioctl(deviceFD, VFIOUAPI.deviceAttachIOMMUFDPT, &attach, .attachIOMMUFDPT, closing: fds + [deviceFD])
        return KernelVFIODevice(
            name: name, openPath: .cdev(name: cdev, ioasID: ioas), deviceFD: deviceFD,
            iommu: .iommufd(FileDescriptor(rawValue: iommufd), ioasID: ioas), system: system, dirtyTrackingHWPT: hwpt,
            iommufdDeviceID: deviceID)
    }
}
