#if canImport(Glibc)
import Glibc
#endif

/// What the kernel said when asked for a device's migration flags.
public enum VFIOProbeOutcome: Sendable, Hashable {
    /// `VFIO_DEVICE_FEATURE` GET MIGRATION answered with these flags.
    case supported(VFIOMigrationFlags)
    /// The device has no migration support (the ioctl failed with ENOTTY or EINVAL).
    case unsupported(errno: Int32)
    /// The question could not be asked (no permission, device busy, no VFIO node); `reason` says which step failed.
    case failed(reason: String)
}

/// The system calls the probe makes, so tests can run it without /dev/vfio.
protocol VFIOProbeSystem {
    /// `open(2)`: the descriptor, or -errno.
    func open(_ path: String, _ flags: Int32) -> Int32
    /// `ioctl(2)` with a pointer argument: the result, or -errno.
    func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer?) -> Int32
    /// `ioctl(2)` with an integer argument: the result, or -errno.
    func ioctl(_ fd: Int32, _ request: UInt, value: Int) -> Int32
    func close(_ fd: Int32)
}

/// The real system calls.
struct LinuxVFIOProbeSystem: VFIOProbeSystem {
    func open(_ path: String, _ flags: Int32) -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC)
        return fd >= 0 ? fd : -errno
    }

    func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer?) -> Int32 {
        let rc = arg.map { Glibc.ioctl(fd, request, $0) } ?? Glibc.ioctl(fd, request, 0)
        return rc >= 0 ? rc : -errno
    }

    func ioctl(_ fd: Int32, _ request: UInt, value: Int) -> Int32 {
        let rc = Glibc.ioctl(fd, request, CInt(truncatingIfNeeded: value))
        return rc >= 0 ? rc : -errno
    }

    func close(_ fd: Int32) { _ = Glibc.close(fd) }
}

/// Opens a VFIO device and reads its migration flags (`VFIO_DEVICE_FEATURE`, GET, feature
/// MIGRATION). The legacy group/container path is used when the group node exists, the
/// character device with iommufd otherwise. Needs permission on the nodes and fails with
/// EBUSY while a VMM holds the device. Nothing is changed on the device.
public struct VFIOMigrationProbe: Sendable {
    // The ioctl numbers are _IO(';', 100 + n): the system header (6.1) is too old to import.
    static let getAPIVersion: UInt = 0x3B64
    static let checkExtension: UInt = 0x3B65
    static let setIOMMU: UInt = 0x3B66
    static let groupGetStatus: UInt = 0x3B67
    static let groupSetContainer: UInt = 0x3B68
    static let groupGetDeviceFD: UInt = 0x3B6A
    static let deviceFeature: UInt = 0x3B75
    static let deviceBindIOMMUFD: UInt = 0x3B76
    static let type1v2IOMMU = 3
    static let featureGet: UInt32 = 1 << 16
    static let featureMigration: UInt32 = 1
    static let groupViable: UInt32 = 1

    /// Where the device nodes are (`/dev`), for tests.
    var devRoot: String
    private let system: any VFIOProbeSystem & Sendable

    /// A probe of the live system.
    public init() {
        self.init(system: LinuxVFIOProbeSystem(), devRoot: "/dev")
    }

    init(system: any VFIOProbeSystem & Sendable, devRoot: String) {
        self.system = system
        self.devRoot = devRoot
    }

    /// Asks the kernel for the device's migration flags.
    public func probe(_ device: PCIDevice) -> VFIOProbeOutcome {
        if let group = device.iommuGroup, device.vfioCdevName == nil || nodeExists("\(devRoot)/vfio/\(group)") {
            return probeThroughGroup(device.address, group: group)
        }
        if let cdev = device.vfioCdevName {
            return probeThroughCdev(cdev)
        }
        return .failed(reason: "no IOMMU group and no VFIO character device")
    }

    private func nodeExists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// vfio-uapi-spec §3.1: container, group, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD.
    private func probeThroughGroup(_ address: PCIAddress, group: Int) -> VFIOProbeOutcome {
        let containerPath = "\(devRoot)/vfio/vfio"
        let container = system.open(containerPath, O_RDWR)
        guard container >= 0 else { return .failed(reason: "open \(containerPath): \(errnoText(-container))") }
        defer { system.close(container) }
        let api = system.ioctl(container, Self.getAPIVersion, nil)
        guard api == 0 else {
            return .failed(reason: api < 0 ? "VFIO_GET_API_VERSION: \(errnoText(-api))" : "VFIO API version \(api), expected 0")
        }
        guard system.ioctl(container, Self.checkExtension, value: Self.type1v2IOMMU) == 1 else {
            return .failed(reason: "the container has no VFIO_TYPE1v2_IOMMU")
        }
        let groupPath = "\(devRoot)/vfio/\(group)"
        let groupFD = system.open(groupPath, O_RDWR)
        guard groupFD >= 0 else {
            let hint = -groupFD == EBUSY ? " (in use, e.g. by a running VM)" : ""
            return .failed(reason: "open \(groupPath): \(errnoText(-groupFD))\(hint)")
        }
        defer { system.close(groupFD) }
        var status: (UInt32, UInt32) = (8, 0)  // struct vfio_group_status { argsz; flags }
        let rc = withUnsafeMutableBytes(of: &status) { system.ioctl(groupFD, Self.groupGetStatus, $0.baseAddress) }
        guard rc >= 0 else { return .failed(reason: "VFIO_GROUP_GET_STATUS: \(errnoText(-rc))") }
        guard status.1 & Self.groupViable != 0 else {
            return .failed(reason: "IOMMU group \(group) is not viable: every device in it must be bound to a VFIO driver or to none")
        }
        var containerFD = container
        let set = withUnsafeMutableBytes(of: &containerFD) { system.ioctl(groupFD, Self.groupSetContainer, $0.baseAddress) }
        guard set >= 0 else { return .failed(reason: "VFIO_GROUP_SET_CONTAINER: \(errnoText(-set))") }
        let iommu = system.ioctl(container, Self.setIOMMU, value: Self.type1v2IOMMU)
        guard iommu >= 0 else { return .failed(reason: "VFIO_SET_IOMMU: \(errnoText(-iommu))") }
        var name = Array(address.description.utf8CString)
        let deviceFD = name.withUnsafeMutableBytes { system.ioctl(groupFD, Self.groupGetDeviceFD, $0.baseAddress) }
        guard deviceFD >= 0 else {
            return .failed(reason: "VFIO_GROUP_GET_DEVICE_FD(\(address)): \(errnoText(-deviceFD))")
        }
        defer { system.close(deviceFD) }
        return readMigrationFlags(deviceFD)
    }

    /// vfio-uapi-spec §3.2: the character device, bound to an iommufd (no IOAS needed for features).
    private func probeThroughCdev(_ name: String) -> VFIOProbeOutcome {
        let iommuPath = "\(devRoot)/iommu"
        let iommufd = system.open(iommuPath, O_RDWR)
        guard iommufd >= 0 else { return .failed(reason: "open \(iommuPath): \(errnoText(-iommufd))") }
        defer { system.close(iommufd) }
        let path = "\(devRoot)/vfio/devices/\(name)"
        let deviceFD = system.open(path, O_RDWR)
        guard deviceFD >= 0 else { return .failed(reason: "open \(path): \(errnoText(-deviceFD))") }
        defer { system.close(deviceFD) }
        // struct vfio_device_bind_iommufd { u32 argsz; u32 flags; s32 iommufd; u32 out_devid; }
        var bind: (UInt32, UInt32, Int32, UInt32) = (16, 0, iommufd, 0)
        let rc = withUnsafeMutableBytes(of: &bind) { system.ioctl(deviceFD, Self.deviceBindIOMMUFD, $0.baseAddress) }
        guard rc >= 0 else { return .failed(reason: "VFIO_DEVICE_BIND_IOMMUFD: \(errnoText(-rc))") }
        return readMigrationFlags(deviceFD)
    }

    /// `struct { u32 argsz = 16; u32 flags = GET | MIGRATION; u64 migration_flags }`.
    private func readMigrationFlags(_ deviceFD: Int32) -> VFIOProbeOutcome {
        var feature: (UInt32, UInt32, UInt64) = (16, Self.featureGet | Self.featureMigration, 0)
        let rc = withUnsafeMutableBytes(of: &feature) { system.ioctl(deviceFD, Self.deviceFeature, $0.baseAddress) }
        if rc < 0 {
            if -rc == ENOTTY || -rc == EINVAL { return .unsupported(errno: -rc) }
            return .failed(reason: "VFIO_DEVICE_FEATURE(MIGRATION): \(errnoText(-rc))")
        }
        return .supported(VFIOMigrationFlags(rawValue: feature.2))
    }
}
