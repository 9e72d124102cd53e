import Synchronization
import SystemPackage

/// Where the host's sysfs and device nodes live. Tests point `sysfsRoot` at a tree laid out like /sys.
public struct VFIOHostPaths: Sendable, Equatable {
    /// Normally "/sys".
    public var sysfsRoot: String
    /// Normally "/dev".
    public var devRoot: String

    public init(sysfsRoot: String = "/sys", devRoot: String = "/dev") { (self.sysfsRoot, self.devRoot) = (sysfsRoot, devRoot) }
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
    /// Not opened here: a device fd the VMM already held (``KernelVFIODevice/adopting(deviceFD:name:iommu:ownership:)``).
    case adopted
}

/// Where a device's DMA is mapped: the VMM maps guest memory here (`VFIO_IOMMU_MAP_DMA` on a
/// type1 container, `IOMMU_IOAS_MAP` on an iommufd IOAS). Valid until the device is closed (or,
/// for borrowed fds, while their owner keeps them open).
public enum VFIOIOMMUContext: Sendable, Equatable {
    /// A type1 (or no-IOMMU) container and the device's IOMMU group, attached to it.
    case container(container: FileDescriptor, group: FileDescriptor)
    /// The iommufd the device cdev is bound to, and the IOAS it is attached to (nil when the
    /// VMM attached it and did not say which).
    case iommufd(FileDescriptor, ioasID: UInt32?)

    /// The fds, in the order they were opened.
    var fileDescriptors: [Int32] {
        switch self {
        case .container(let container, let group): [container.rawValue, group.rawValue]
        case .iommufd(let fd, _): [fd.rawValue]
        }
    }
}

/// Who closes the fds a ``KernelVFIODevice`` adopts.
public enum VFIODescriptorOwnership: Sendable, Equatable {
    /// The VMM keeps them: ``KernelVFIODevice/close()`` and deinit leave them open.
    case borrowed
    /// Handed over: the device closes them (device fd first) on close or deinit.
    case transferred
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
/// where the kernel has it, else through its IOMMU group and a type1 container. A VMM that holds
/// the device already hands its fd over instead (``adopting(deviceFD:name:iommu:ownership:)``).
public final class KernelVFIODevice: VFIOMigrationDevice {
    public let name: String
    /// How the device fd was obtained.
    public let openPath: VFIODeviceOpenPath
    /// The container and group, or the iommufd, the device's DMA is mapped through: what a VMM
    /// maps guest memory into.
    public let iommu: VFIOIOMMUContext
    /// Who closes the device fd and the IOMMU fds (``VFIODescriptorOwnership/transferred`` for
    /// a device opened here).
    public let ownership: VFIODescriptorOwnership
    package let client: VFIODeviceClient
    /// Container and group fds, or the iommufd fd, closed after the device fd (none when borrowed).
    private let supportFDs: Mutex<[Int32]>
    private let system: any VFIOSyscalls
    /// The `VFIO_GROUP_GET_STATUS` flags read before `VFIO_GROUP_SET_CONTAINER` (group path only).
    /// Emulated mdev groups have been seen reporting VIABLE (Debian 6.12) and 0 (elsewhere).
    package let groupStatusBeforeContainer: UInt32?
    /// The HWPT the device is attached to when it was opened through its cdev and the IOMMU
    /// gave it dirty tracking (`IOMMU_HWPT_ALLOC_DIRTY_TRACKING`); nil otherwise.
    public let dirtyTrackingHWPT: UInt32?
    /// The device's id in its iommufd (`out_devid` of `VFIO_DEVICE_BIND_IOMMUFD`), for
    /// `IOMMU_HWPT_ALLOC`; nil unless opened through the cdev here.
    public let iommufdDeviceID: UInt32?

    init(
        name: String, openPath: VFIODeviceOpenPath, deviceFD: Int32, iommu: VFIOIOMMUContext, system: any VFIOSyscalls,
        ownership: VFIODescriptorOwnership = .transferred, groupStatusBeforeContainer: UInt32? = nil,
        dirtyTrackingHWPT: UInt32? = nil, iommufdDeviceID: UInt32? = nil
    ) {
        self.dirtyTrackingHWPT = dirtyTrackingHWPT
        self.iommufdDeviceID = iommufdDeviceID
        self.name = name
        self.openPath = openPath
        self.iommu = iommu
        self.ownership = ownership
        self.groupStatusBeforeContainer = groupStatusBeforeContainer
        self.client = VFIODeviceClient(deviceFD: deviceFD, name: name, system: system, ownsDeviceFD: ownership == .transferred)
        self.supportFDs = Mutex(ownership == .transferred ? iommu.fileDescriptors : [])
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

    /// Wraps a device fd the VMM already holds, with no second open (the kernel refuses a second
    /// open of a cdev, and a group opens once): a cdev already bound to the VMM's iommufd and
    /// attached to its IOAS, or a device fd from `VFIO_GROUP_GET_DEVICE_FD` on a group set to
    /// a container. The fd is checked with `VFIO_DEVICE_GET_INFO` (a cdev not yet bound answers
    /// EINVAL); nothing else is sent until a migration asks.
    /// - Parameters:
    ///   - deviceFD: the open device fd.
    ///   - name: the device's name for errors and the handler's idstr (its PCI address).
    ///   - iommu: the container and group, or the iommufd, the VMM maps the device's DMA through.
    ///   - ownership: ``VFIODescriptorOwnership/borrowed`` (the default) leaves every fd open
    ///     on close; ``VFIODescriptorOwnership/transferred`` closes them.
    /// - Throws: ``VFIOError/deviceNotFound(device:detail:)`` when the fd is no usable VFIO device fd.
    public static func adopting(
        deviceFD: FileDescriptor, name: String, iommu: VFIOIOMMUContext, ownership: VFIODescriptorOwnership = .borrowed
    ) throws(VFIOError) -> KernelVFIODevice {
        try adopting(deviceFD: deviceFD, name: name, iommu: iommu, ownership: ownership, system: VFIOSystem.live)
    }

    /// ``adopting(deviceFD:name:iommu:ownership:)`` with every syscall going through `system`.
    package static func adopting(
        deviceFD: FileDescriptor, name: String, iommu: VFIOIOMMUContext, ownership: VFIODescriptorOwnership, system: any VFIOSyscalls
    ) throws(VFIOError) -> KernelVFIODevice {
        guard deviceFD.rawValue >= 0, iommu.fileDescriptors.allSatisfy({ $0 >= 0 }) else {
            throw VFIOError.deviceNotFound(device: name, detail: "a negative fd was given to adopt")
        }
        let device = KernelVFIODevice(
            name: name, openPath: .adopted, deviceFD: deviceFD.rawValue, iommu: iommu, system: system,
            ownership: ownership)
        do {
            _ = try device.client.deviceInfo()
        } catch {
            // A device that cannot be adopted closes nothing: the fds stay the caller's.
            device.forget()
            let errno = error.errno.map { "\($0)" } ?? "\(error)"
            let hint = if case .iommufd = iommu { "; a cdev must be bound to the iommufd (VFIO_DEVICE_BIND_IOMMUFD) first" } else { "" }
            throw VFIOError.deviceNotFound(
                device: name, detail: "fd \(deviceFD.rawValue) is not a usable VFIO device fd (VFIO_DEVICE_GET_INFO: \(errno))\(hint)")
        }
        return device
    }

    /// Drops every fd without closing any.
    private func forget() {
        client.forget()
        supportFDs.withLock { $0.removeAll() }
    }

    /// The device fd, or nil once closed.
    public var deviceFileDescriptor: FileDescriptor? { client.deviceFD.map { FileDescriptor(rawValue: $0) } }

    /// Closes the device fd (the kernel disables its data fds), then the group/container or iommufd
    /// fds. A borrowed device only lets go of them: the VMM closes its own fds.
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

    /// The type1 container the device's DMA is mapped through (nil for a cdev/iommufd device
    /// and for a no-IOMMU group, whose container answers nothing but CHECK_EXTENSION).
    public var type1Container: VFIOType1Container? {
        guard case .container(let container, _) = iommu else { return nil }
        if case .group(_, noIOMMU: true) = openPath { return nil }
        return VFIOType1Container(fileDescriptor: container, system: system)
    }

    /// The iommufd the device is bound to (nil on the group/container path).
    public var iommufd: VFIOIOMMUFD? {
        guard case .iommufd(let fd, _) = iommu else { return nil }
        return VFIOIOMMUFD(fileDescriptor: fd, system: system)
    }

    /// What ``migrationFlags()`` answers, keeping the errno (ENOTTY or EINVAL) when it is "unsupported".
    public func migrationSupport() throws(VFIOError) -> VFIOMigrationSupport { try client.migrationSupport() }

    // MARK: VFIOMigrationDevice

    // migrationFlags, deviceState, setState, stopCopySize, reset, enablePrecopyInfoV2: VFIOUAPIDevice.
}
