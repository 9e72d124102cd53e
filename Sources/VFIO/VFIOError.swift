import SystemPackage

/// A VFIO operation, named in errors and syscall traces.
public enum VFIOOperation: Sendable, Equatable, CustomStringConvertible {
    /// `VFIO_DEVICE_FEATURE` GET of `MIGRATION` (probing migration support).
    case probeMigration
    /// `VFIO_DEVICE_FEATURE` PROBE | SET of `DMA_LOGGING_START` (does the device log its DMA writes?).
    case probeDMALogging
    /// `VFIO_DEVICE_FEATURE` SET of `DMA_LOGGING_START` (ranges and a page size).
    case startDMALogging
    /// `VFIO_DEVICE_FEATURE` SET of `DMA_LOGGING_STOP`.
    case stopDMALogging
    /// `VFIO_DEVICE_FEATURE` GET of `DMA_LOGGING_REPORT` (read and clear a range's log).
    case reportDMALogging
    /// `VFIO_IOMMU_GET_INFO` on a type1 container.
    case iommuGetInfo
    /// `VFIO_IOMMU_MAP_DMA`.
    case mapDMA
    /// `VFIO_IOMMU_UNMAP_DMA`.
    case unmapDMA
    /// `VFIO_IOMMU_DIRTY_PAGES` with `START`.
    case startDirtyPages
    /// `VFIO_IOMMU_DIRTY_PAGES` with `STOP`.
    case stopDirtyPages
    /// `VFIO_IOMMU_DIRTY_PAGES` with `GET_BITMAP`.
    case getDirtyBitmap
    /// `IOMMU_IOAS_MAP`.
    case mapIOAS
    /// `IOMMU_IOAS_UNMAP`.
    case unmapIOAS
    /// `IOMMU_HWPT_ALLOC`.
    case allocateHWPT
    /// `IOMMU_HWPT_SET_DIRTY_TRACKING`.
    case setHWPTDirtyTracking
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP`.
    case getHWPTDirtyBitmap
    /// `VFIO_DEVICE_FEATURE` GET of `MIG_DEVICE_STATE`.
    case getState
    /// `VFIO_DEVICE_FEATURE` SET of `MIG_DEVICE_STATE`.
    case setState
    /// `VFIO_DEVICE_FEATURE` GET of `MIG_DATA_SIZE`.
    case stopCopySize
    /// `VFIO_DEVICE_RESET`.
    case reset
    /// `read(2)` on a migration data fd.
    case read
    /// `write(2)` on a migration data fd.
    case write
    /// `VFIO_MIG_GET_PRECOPY_INFO` on a migration data fd.
    case precopyInfo
    /// `VFIO_DEVICE_FEATURE` SET of `MIG_PRECOPY_INFOv2` (the opt-in to REINIT).
    case precopyInfoV2
    /// `close(2)`.
    case close
    /// `open(2)` of a path.
    case open(String)
    /// Reading sysfs (`readlink(2)`, directory listing) at a path.
    case sysfs(String)
    /// `VFIO_GET_API_VERSION`.
    case getAPIVersion
    /// `VFIO_CHECK_EXTENSION`.
    case checkExtension
    /// `VFIO_GROUP_GET_STATUS`.
    case groupStatus
    /// `VFIO_GROUP_SET_CONTAINER`.
    case setContainer
    /// `VFIO_SET_IOMMU`.
    case setIOMMU
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    case getDeviceFD
    /// `IOMMU_IOAS_ALLOC`.
    case allocateIOAS
    /// `VFIO_DEVICE_BIND_IOMMUFD`.
    case bindIOMMUFD
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    case attachIOMMUFDPT
    /// `VFIO_DEVICE_GET_INFO`.
    case getInfo
    /// `VFIO_DEVICE_GET_REGION_INFO` and pread/pwrite of the PCI config region
    /// (`VFIO_PCI_CONFIG_REGION_INDEX`).
    case configSpace

    public var description: String {
        switch self {
        case .probeMigration: "VFIO_DEVICE_FEATURE GET MIGRATION"
        case .probeDMALogging: "VFIO_DEVICE_FEATURE PROBE|SET DMA_LOGGING_START"
        case .startDMALogging: "VFIO_DEVICE_FEATURE SET DMA_LOGGING_START"
        case .stopDMALogging: "VFIO_DEVICE_FEATURE SET DMA_LOGGING_STOP"
        case .reportDMALogging: "VFIO_DEVICE_FEATURE GET DMA_LOGGING_REPORT"
        case .iommuGetInfo: "VFIO_IOMMU_GET_INFO"
        case .mapDMA: "VFIO_IOMMU_MAP_DMA"
        case .unmapDMA: "VFIO_IOMMU_UNMAP_DMA"
        case .startDirtyPages: "VFIO_IOMMU_DIRTY_PAGES START"
        case .stopDirtyPages: "VFIO_IOMMU_DIRTY_PAGES STOP"
        case .getDirtyBitmap: "VFIO_IOMMU_DIRTY_PAGES GET_BITMAP"
        case .mapIOAS: "IOMMU_IOAS_MAP"
        case .unmapIOAS: "IOMMU_IOAS_UNMAP"
        case .allocateHWPT: "IOMMU_HWPT_ALLOC"
        case .setHWPTDirtyTracking: "IOMMU_HWPT_SET_DIRTY_TRACKING"
        case .getHWPTDirtyBitmap: "IOMMU_HWPT_GET_DIRTY_BITMAP"
        case .getState: "VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE"
        case .setState: "VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE"
        case .stopCopySize: "VFIO_DEVICE_FEATURE GET MIG_DATA_SIZE"
        case .reset: "VFIO_DEVICE_RESET"
        case .read: "read of the migration data fd"
        case .write: "write of the migration data fd"
        case .precopyInfo: "VFIO_MIG_GET_PRECOPY_INFO"
        case .precopyInfoV2: "VFIO_DEVICE_FEATURE SET MIG_PRECOPY_INFOv2"
        case .close: "close"
        case .open(let path): "open \(path)"
        case .sysfs(let path): "sysfs lookup \(path)"
        case .getAPIVersion: "VFIO_GET_API_VERSION"
        case .checkExtension: "VFIO_CHECK_EXTENSION"
        case .groupStatus: "VFIO_GROUP_GET_STATUS"
        case .setContainer: "VFIO_GROUP_SET_CONTAINER"
        case .setIOMMU: "VFIO_SET_IOMMU"
        case .getDeviceFD: "VFIO_GROUP_GET_DEVICE_FD"
        case .allocateIOAS: "IOMMU_IOAS_ALLOC"
        case .bindIOMMUFD: "VFIO_DEVICE_BIND_IOMMUFD"
        case .attachIOMMUFDPT: "VFIO_DEVICE_ATTACH_IOMMUFD_PT"
        case .getInfo: "VFIO_DEVICE_GET_INFO"
        case .configSpace: "access to the VFIO config region"
        }
    }
}

/// Why a VFIO operation failed. Every case names the device (a PCI address, an mdev UUID or a
/// simulated device's name). "Unsupported" answers are not errors: probes return nil for them.
public enum VFIOError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A syscall failed with `errno`.
    case syscallFailed(operation: VFIOOperation, device: String, errno: Errno)
    /// A SET of the migration state failed. The kernel echoes the requested state even on failure,
    /// so `actual` is the state a GET reported afterwards (nil when that GET failed too).
    case setStateFailed(device: String, requested: VFIODeviceState, errno: Errno, actual: VFIODeviceState?)
    /// The request was refused before reaching the kernel because the kernel must never see it
    /// (STOP_COPY→PRE_COPY or STOP_COPY→PRE_COPY_P2P hang pre-fix kernels).
    case forbiddenTransition(device: String, from: VFIODeviceState, to: VFIODeviceState)
    /// The requested state does not exist on this device (ERROR, or a state its flags lack).
    case unsupportedState(device: String, requested: VFIODeviceState, flags: VFIOMigrationFlags)
    /// The device offers no migration (the MIGRATION feature answered ENOTTY or EINVAL).
    case migrationUnsupported(device: String)
    /// A feature or ioctl the device does not implement (ENOTTY, or EINVAL from an old kernel).
    case featureUnsupported(operation: VFIOOperation, device: String, errno: Errno)
    /// `VFIO_MIG_GET_PRECOPY_INFO` outside PRE_COPY/PRE_COPY_P2P (the kernel answers EINVAL).
    case notInPreCopy(device: String)
    /// The kernel answered with something the uAPI does not allow (e.g. an unknown state value).
    case unexpectedReply(operation: VFIOOperation, device: String, detail: String)
    /// The data fd object was already closed (the kernel would answer EBADF).
    case dataFDClosed(operation: VFIOOperation, device: String)
    /// The device could not be found or opened through sysfs / /dev/vfio.
    case deviceNotFound(device: String, detail: String)
    /// A simulated device's configuration is not one the simulator can model.
    case invalidConfiguration(device: String, detail: String)
    /// A request refused before reaching the kernel: its arguments are out of bounds (a range
    /// that overflows, a bitmap larger than the kernel accepts, a page size that is no power of two).
    case invalidRequest(operation: VFIOOperation, device: String, detail: String)

    /// The errno carried by this error, when it has one.
    public var errno: Errno? {
        switch self {
        case .syscallFailed(_, _, let errno), .setStateFailed(_, _, let errno, _), .featureUnsupported(_, _, let errno):
            errno
        case .notInPreCopy: .invalidArgument
        case .dataFDClosed: .badFileDescriptor
        default: nil
        }
    }

    /// The device the error is about.
    public var device: String {
        switch self {
        case .syscallFailed(_, let device, _), .setStateFailed(let device, _, _, _),
            .forbiddenTransition(let device, _, _), .unsupportedState(let device, _, _),
            .migrationUnsupported(let device), .featureUnsupported(_, let device, _), .notInPreCopy(let device),
            .unexpectedReply(_, let device, _), .dataFDClosed(_, let device), .deviceNotFound(let device, _),
            .invalidConfiguration(let device, _), .invalidRequest(_, let device, _):
            device
        }
    }

    public var description: String {
        switch self {
        case .syscallFailed(let operation, let device, let errno):
            "\(device): \(operation) failed: \(errno) (errno \(errno.rawValue))"
        case .setStateFailed(let device, let requested, let errno, let actual):
            "\(device): setting migration state \(requested) failed: \(errno) (errno \(errno.rawValue)); "
                + "device is now \(actual.map(\.description) ?? "unknown (GET failed too)")"
        case .forbiddenTransition(let device, let from, let to):
            "\(device): refusing to request \(from)→\(to): this request hangs kernels without the FSM fix"
        case .unsupportedState(let device, let requested, let flags):
            "\(device): migration state \(requested) is not offered by a device with flags \(flags)"
        case .migrationUnsupported(let device):
            "\(device): the device does not support VFIO migration"
        case .featureUnsupported(let operation, let device, let errno):
            "\(device): \(operation) is not supported by the device (\(errno))"
        case .notInPreCopy(let device):
            "\(device): \(VFIOOperation.precopyInfo) is only valid in PRE_COPY or PRE_COPY_P2P"
        case .unexpectedReply(let operation, let device, let detail):
            "\(device): unexpected reply to \(operation): \(detail)"
        case .dataFDClosed(let operation, let device):
            "\(device): \(operation) on a migration data fd that was already closed"
        case .deviceNotFound(let device, let detail):
            "\(device): cannot open the VFIO device: \(detail)"
        case .invalidConfiguration(let device, let detail):
            "\(device): invalid simulated device configuration: \(detail)"
        case .invalidRequest(let operation, let device, let detail):
            "\(device): \(operation) not sent: \(detail)"
        }
    }
}
