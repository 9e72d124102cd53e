import Synchronization
import SystemPackage

/// Where the host's sysfs and device nodes live. Tests point `sysfsRoot` at a tree laid out like /sys.
public struct VFIOHostPaths: Sendable, Equatable {
    /// Normally "/sys".
    public var sysfsRoot: String
    /// Normally "/dev".
    public var devRoot: String

    public init(sysfsRoot: String = "/sys", devRoot: String = "/dev") {
        self.sysfsRoot = sysfsRoot
        self.devRoot = devRoot
    }
}

/// How to obtain the device fd.
public enum VFIODeviceAccess: Sendable, Equatable {
    /// The device cdev with iommufd when the kernel has it, else the group and a type1 container.
    case automatic
    /// Always the IOMMU group (/dev/vfio/N or /dev/vfio/noiommu-N) and a type1 container.
    case group
    /// Always the device cdev (/dev/vfio/devices/vfioX) bound to iommufd (/dev/iommu).
    case cdev
}

/// The way a `KernelVFIODevice` was opened.
public enum VFIODeviceOpenPath: Sendable, Equatable {
    /// Through IOMMU group `number` and a container (`noIOMMU`: /dev/vfio/noiommu-N).
    case group(number: Int, noIOMMU: Bool)
    /// Through the device cdev `vfioX`, bound to iommufd and attached to a fresh IOAS.
    case cdev(name: String, ioasID: UInt32)
}

/// Which bus a device is on, which decides its sysfs directory.
public enum VFIODeviceAddress: Sendable, Equatable, CustomStringConvertible {
    /// A PCI device, e.g. `0000:3b:00.2` (a missing domain is taken as 0000).
    case pci(String)
    /// A mediated device, by UUID (e.g. an mtty instance).
    case mdev(String)

    /// The name the kernel knows the device by (VFIO_GROUP_GET_DEVICE_FD takes it).
    public var name: String {
        switch self {
        case .pci(let address): address.split(separator: ":").count == 2 ? "0000:" + address : address
        case .mdev(let uuid): uuid.lowercased()
        }
    }

    /// The device's sysfs directory under `sysfsRoot`.
    public func sysfsDirectory(in sysfsRoot: String) -> String {
        switch self {
        case .pci: "\(sysfsRoot)/bus/pci/devices/\(name)"
        case .mdev: "\(sysfsRoot)/bus/mdev/devices/\(name)"
        }
    }

    public var description: String { name }
}

/// A VFIO device opened from the real kernel (or whatever the syscall seam stands for).
///
/// Found from a PCI address or an mdev UUID via sysfs; opened through the device cdev with iommufd
/// where the kernel has it, else through its IOMMU group and a type1 container.
public final class KernelVFIODevice: VFIOMigrationDevice {
    public let name: String
    /// How the device fd was obtained.
    public let openPath: VFIODeviceOpenPath
    let client: VFIODeviceClient
    /// Container and group fds, or the iommufd fd, closed after the device fd.
    private let supportFDs: Mutex<[Int32]>
    private let system: any VFIOSyscalls
    /// The `VFIO_GROUP_GET_STATUS` flags read before `VFIO_GROUP_SET_CONTAINER` (group path only).
    /// Emulated mdev groups have been seen reporting VIABLE (Debian 6.12) and 0 (elsewhere).
    package let groupStatusBeforeContainer: UInt32?

    init(
        name: String, openPath: VFIODeviceOpenPath, deviceFD: Int32, supportFDs: [Int32], system: any VFIOSyscalls,
        groupStatusBeforeContainer: UInt32? = nil
    ) {
        self.name = name
        self.openPath = openPath
        self.groupStatusBeforeContainer = groupStatusBeforeContainer
        self.client = VFIODeviceClient(deviceFD: deviceFD, name: name, system: system)
        self.supportFDs = Mutex(supportFDs)
        self.system = system
    }

    deinit {
        try? client.close()
        for fd in supportFDs.withLock({ $0 }).reversed() { _ = system.close(fd) }
    }

    /// Opens the device at `address`.
    public static func open(
        _ address: VFIODeviceAddress, access: VFIODeviceAccess = .automatic, paths: VFIOHostPaths = VFIOHostPaths()
    ) throws(VFIOError) -> KernelVFIODevice {
        try open(address, access: access, paths: paths, system: VFIOSystem.live)
    }

    /// Opens the device at `address` with every syscall going through `system`.
    package static func open(
        _ address: VFIODeviceAddress, access: VFIODeviceAccess, paths: VFIOHostPaths, system: any VFIOSyscalls
    ) throws(VFIOError) -> KernelVFIODevice {
        let opener = VFIODeviceOpener(address: address, paths: paths, system: system)
        return try opener.open(access: access)
    }

    /// The device fd, or nil once closed.
    public var deviceFileDescriptor: FileDescriptor? { client.deviceFD.map { FileDescriptor(rawValue: $0) } }

    /// Closes the device fd (the kernel disables its data fds), then the group/container or iommufd fds.
    public func close() throws(VFIOError) {
        try client.close()
        let fds = supportFDs.withLock { fds in
            defer { fds.removeAll() }
            return fds
        }
        for fd in fds.reversed() {
            if case .failure(let errno) = system.close(fd), errno != .interrupted {
                throw VFIOError.syscallFailed(operation: .close, device: name, errno: errno)
            }
        }
    }

    /// What ``migrationFlags()`` answers, keeping the errno (ENOTTY or EINVAL) when it is "unsupported".
    public func migrationSupport() throws(VFIOError) -> VFIOMigrationSupport { try client.migrationSupport() }

    // MARK: VFIOMigrationDevice

    public func migrationFlags() throws(VFIOError) -> VFIOMigrationFlags? { try client.migrationFlags() }

    public func deviceState() throws(VFIOError) -> VFIODeviceState { try client.deviceState() }

    @discardableResult
    public func setState(_ state: VFIODeviceState) throws(VFIOError) -> VFIOMigrationDataFD? {
        try client.setState(state)
    }

    public func stopCopySize() throws(VFIOError) -> UInt64 { try client.stopCopySize() }

    public func reset() throws(VFIOError) { try client.reset() }
}
