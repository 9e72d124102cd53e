#if canImport(Glibc)
import Glibc
#endif
import VFIO

/// What the kernel said when asked for a device's migration flags.
public enum VFIOProbeOutcome: Sendable, Hashable {
    /// `VFIO_DEVICE_FEATURE` GET MIGRATION answered with these flags.
    case supported(VFIOMigrationFlags)
    /// The device has no migration support (the ioctl failed with ENOTTY or EINVAL).
    case unsupported(errno: Int32)
    /// The question could not be asked (no permission, device busy, no VFIO node); `reason` says which step failed.
    case failed(reason: String)
}

/// Opens a VFIO device with ``/VFIO/KernelVFIODevice`` and reads its migration flags (`VFIO_DEVICE_FEATURE`,
/// GET, feature MIGRATION). The legacy group/container path is used when the group node exists, the
/// character device with iommufd otherwise. Needs permission on the nodes and fails with EBUSY while
/// a VMM holds the device. Nothing is changed on the device.
public struct VFIOMigrationProbe: Sendable {
    /// Where sysfs and the device nodes are.
    let paths: VFIOHostPaths
    private let system: any VFIOSyscalls

    /// A probe of the live system (/sys, /dev).
    public init() {
        self.init(paths: VFIOHostPaths(), system: VFIOSystem.live)
    }

    /// A probe whose every syscall goes through `system` (the simulator's `SimulatedVFIOHost` in tests).
    package init(paths: VFIOHostPaths, system: any VFIOSyscalls) {
        self.paths = paths
        self.system = system
    }

    /// Asks the kernel for the device's migration flags.
    public func probe(_ device: PCIDevice) -> VFIOProbeOutcome {
        let access: VFIODeviceAccess
        if let group = device.iommuGroup,
            device.vfioCdevName == nil || Glibc.access("\(paths.devRoot)/vfio/\(group)", F_OK) == 0
        {
            access = .group
        } else if device.vfioCdevName != nil {
            access = .cdev
        } else {
            return .failed(reason: "no IOMMU group and no VFIO character device")
        }
        do throws(VFIOError) {
            let address = VFIODeviceAddress.pci(device.address.description)
            let opened = try KernelVFIODevice.open(address, access: access, paths: paths, system: system)
            defer { try? opened.close() }
            switch try opened.migrationSupport() {
            case .supported(let flags): return .supported(flags)
            case .unsupported(let errno): return .unsupported(errno: errno.rawValue)
            }
        } catch {
            return .failed(reason: Self.reason(for: error))
        }
    }

    /// The step that failed and why, in the words of the ioctl or path.
    static func reason(for error: VFIOError) -> String {
        switch error {
        case .syscallFailed(let operation, let device, let errno):
            let why = errnoText(errno.rawValue)
            switch operation {
            case .open(let path):
                let hint = errno.rawValue == EBUSY ? " (in use, e.g. by a running VM)" : ""
                return "open \(path): \(why)\(hint)"
            case .probeMigration: return "VFIO_DEVICE_FEATURE(MIGRATION): \(why)"
            case .getDeviceFD: return "\(operation)(\(device)): \(why)"
            default: return "\(operation): \(why)"
            }
        case .unexpectedReply(let operation, _, let detail):
            return "\(operation): \(detail)"
        case .deviceNotFound(_, let detail):
            // "IOMMU group N is not viable (…): bind every device in it to vfio", a missing group link, …
            return detail
        default:
            return error.description
        }
    }
}
