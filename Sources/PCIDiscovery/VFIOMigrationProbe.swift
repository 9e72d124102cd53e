import VFIO

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

/// What the kernel said when asked whether a device logs its DMA writes (a PROBE of
/// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START`).
public enum VFIODMALoggingOutcome: Sendable, Hashable {
    /// The driver has DMA-logging ops: the device reports the pages it writes.
    case supported
    /// The PROBE failed with ENOTTY (or EINVAL from an older kernel): no device dirty tracking.
    case unsupported(errno: Int32)
    /// The PROBE failed otherwise; `reason` names the ioctl and the error.
    case failed(reason: String)
}

/// What the kernel said about IOMMU dirty tracking for the IOMMU a device's DMA goes through.
public enum VFIOIOMMUTrackingOutcome: Sendable, Hashable {
    /// The device's type1 container has the migration capability (`VFIO_IOMMU_GET_INFO`).
    case type1
    /// The device's cdev was attached to an iommufd HWPT allocated with dirty tracking.
    case iommufd
    /// Neither: `reason` names the kernel's answer.
    case unsupported(reason: String)
    /// The question failed; `reason` names the ioctl and the error.
    case failed(reason: String)
}

/// Everything `--probe` asks one device, from one open of it.
public struct VFIODeviceProbeResult: Sendable, Hashable {
    /// The migration flags.
    public var migration: VFIOProbeOutcome
    /// Device dirty tracking; nil when the device could not be opened.
    public var dmaLogging: VFIODMALoggingOutcome?
    /// IOMMU dirty tracking of the device's container or HWPT; nil when not asked.
    public var iommuDirtyTracking: VFIOIOMMUTrackingOutcome?

    /// A result with the given answers.
    public init(migration: VFIOProbeOutcome, dmaLogging: VFIODMALoggingOutcome?, iommuDirtyTracking: VFIOIOMMUTrackingOutcome? = nil) {
        (self.migration, self.dmaLogging, self.iommuDirtyTracking) = (migration, dmaLogging, iommuDirtyTracking)
    }
}

/// Opens a VFIO device with ``/VFIO/KernelVFIODevice`` and reads its migration flags (`VFIO_DEVICE_FEATURE`,
/// GET, feature MIGRATION) and whether it offers DMA logging (PROBE of DMA_LOGGING_START). The
/// legacy group/container path is used when the group node exists, the character device with
/// iommufd otherwise. Needs permission on the nodes and fails with EBUSY while
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
    package init(paths: VFIOHostPaths, system: any VFIOSyscalls) { (self.paths, self.system) = (paths, system) }

    /// Asks the kernel for the device's migration flags.
    public func probe(_ device: PCIDevice) -> VFIOProbeOutcome {
        examine(device).migration
    }

    /// Asks the kernel for the device's migration flags and whether it offers DMA logging
    /// (`VFIO_DEVICE_FEATURE` PROBE | SET of DMA_LOGGING_START, which starts nothing).
    public func examine(_ device: PCIDevice) -> VFIODeviceProbeResult {
        let access: VFIODeviceAccess
        if let group = device.iommuGroup,
            device.vfioCdevName == nil || Glibc.access("\(paths.devRoot)/vfio/\(group)", F_OK) == 0
        {
            access = .group
        } else if device.vfioCdevName != nil {
            access = .cdev
        } else {
            return VFIODeviceProbeResult(migration: .failed(reason: "no IOMMU group and no VFIO character device"), dmaLogging: nil)
        }
        let opened: KernelVFIODevice
        do throws(VFIOError) {
            opened = try KernelVFIODevice.open(.pci(device.address.description), access: access, paths: paths, system: system)
        } catch {
            return VFIODeviceProbeResult(migration: .failed(reason: Self.reason(for: error)), dmaLogging: nil)
        }
        defer { try? opened.close() }
        let migration: VFIOProbeOutcome
        do throws(VFIOError) {
            switch try opened.migrationSupport() {
            case .supported(let flags): migration = .supported(flags)
            case .unsupported(let errno): migration = .unsupported(errno: errno.rawValue)
            }
        } catch {
            migration = .failed(reason: Self.reason(for: error))
        }
        let dmaLogging: VFIODMALoggingOutcome
        do throws(VFIOError) {
            switch try opened.dmaLoggingSupport() {
            case .supported: dmaLogging = .supported
            case .unsupported(let errno): dmaLogging = .unsupported(errno: errno.rawValue)
            }
        } catch {
            dmaLogging = .failed(reason: Self.reason(for: error))
        }
        return VFIODeviceProbeResult(migration: migration, dmaLogging: dmaLogging, iommuDirtyTracking: Self.iommuTracking(opened))
    }

    /// IOMMU dirty tracking, asked without changing anything: `VFIO_IOMMU_GET_INFO` of a type1
    /// container, or whether the cdev open got a dirty-tracking HWPT.
    static func iommuTracking(_ device: KernelVFIODevice) -> VFIOIOMMUTrackingOutcome {
        if let container = device.type1Container {
            do throws(VFIOError) {
                return try container.info().migration != nil
                    ? .type1 : .unsupported(reason: "no migration capability in VFIO_IOMMU_GET_INFO (a type1 driver older than 5.8)")
            } catch {
                return .failed(reason: reason(for: error))
            }
        }
        if device.iommufd != nil {
            return device.dirtyTrackingHWPT != nil
                ? .iommufd : .unsupported(reason: "IOMMU_HWPT_ALLOC with DIRTY_TRACKING refused: the IOMMU has no dirty tracking")
        }
        return .unsupported(reason: "a no-IOMMU group has no IOMMU to track with")
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
            case .probeDMALogging: return "VFIO_DEVICE_FEATURE(PROBE DMA_LOGGING_START): \(why)"
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
