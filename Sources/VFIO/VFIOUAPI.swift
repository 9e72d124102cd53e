// The Linux VFIO uAPI numbers this module speaks, defined here rather than imported: the system's
// linux/vfio.h (6.1) lacks PRE_COPY, precopy info, MIG_DATA_SIZE and the cdev/iommufd ioctls.
// Values: shared/reference/vfio-uapi-spec.md §1, §3.

/// Constants of the VFIO and iommufd uAPI (include/uapi/linux/vfio.h, include/uapi/linux/iommufd.h).
///
/// Every VFIO ioctl is `_IO(';', 100 + n)`: direction and size bits are zero, so a request number is
/// `0x3B00 | (100 + n)` on every architecture with the generic ioctl encoding.
public enum VFIOUAPI {
    /// `VFIO_TYPE`, the ioctl magic `';'`.
    public static let ioctlType: UInt = 0x3B
    /// `VFIO_BASE`, the first ioctl number.
    public static let ioctlBase: UInt = 100
    /// `VFIO_API_VERSION`, answered by `VFIO_GET_API_VERSION`.
    public static let apiVersion: Int32 = 0

    /// `_IO(VFIO_TYPE, VFIO_BASE + n)`.
    @inlinable
    public static func request(_ n: UInt) -> UInt { (ioctlType << 8) | (ioctlBase + n) }

    // MARK: Container ioctls (/dev/vfio/vfio)

    /// `VFIO_GET_API_VERSION` (container), 0x3B64.
    public static let getAPIVersion: UInt = request(0)
    /// `VFIO_CHECK_EXTENSION` (container; the argument is the extension number), 0x3B65.
    public static let checkExtension: UInt = request(1)
    /// `VFIO_SET_IOMMU` (container; the argument is the IOMMU type), 0x3B66.
    public static let setIOMMU: UInt = request(2)

    // MARK: Group ioctls (/dev/vfio/N)

    /// `VFIO_GROUP_GET_STATUS` (group; `struct vfio_group_status`), 0x3B67.
    public static let groupGetStatus: UInt = request(3)
    /// `VFIO_GROUP_SET_CONTAINER` (group; pointer to the container's `int` fd), 0x3B68.
    public static let groupSetContainer: UInt = request(4)
    /// `VFIO_GROUP_UNSET_CONTAINER` (group), 0x3B69.
    public static let groupUnsetContainer: UInt = request(5)
    /// `VFIO_GROUP_GET_DEVICE_FD` (group; pointer to the NUL-terminated device name), 0x3B6A.
    public static let groupGetDeviceFD: UInt = request(6)

    // MARK: Device ioctls

    /// `VFIO_DEVICE_GET_INFO` (device), 0x3B6B.
    public static let deviceGetInfo: UInt = request(7)
    /// `VFIO_DEVICE_GET_REGION_INFO` (device; `struct vfio_region_info`), 0x3B6C.
    public static let deviceGetRegionInfo: UInt = request(8)
    /// `VFIO_DEVICE_RESET` (device, no argument), 0x3B6F.
    public static let deviceReset: UInt = request(11)
    /// `VFIO_DEVICE_FEATURE` (device; `struct vfio_device_feature` + payload), 0x3B75.
    public static let deviceFeature: UInt = request(17)
    /// `VFIO_DEVICE_BIND_IOMMUFD` (cdev device fd; `struct vfio_device_bind_iommufd`), 0x3B76.
    public static let deviceBindIOMMUFD: UInt = request(18)
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (cdev device fd; `struct vfio_device_attach_iommufd_pt`), 0x3B77.
    public static let deviceAttachIOMMUFDPT: UInt = request(19)
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT` (cdev device fd; `struct vfio_device_detach_iommufd_pt`), 0x3B78.
    public static let deviceDetachIOMMUFDPT: UInt = request(20)

    // MARK: Migration data fd ioctls

    /// `VFIO_MIG_GET_PRECOPY_INFO` (the migration data fd, not the device fd;
    /// `struct vfio_precopy_info`), 0x3B79.
    public static let migGetPrecopyInfo: UInt = request(21)

    // MARK: iommufd ioctls (/dev/iommu)

    /// `IOMMU_DESTROY`, 0x3B80.
    public static let iommuDestroy: UInt = 0x3B80
    /// `IOMMU_IOAS_ALLOC` (`struct iommu_ioas_alloc`), 0x3B81.
    public static let iommuIOASAlloc: UInt = 0x3B81

    // MARK: Extensions and IOMMU types

    /// `VFIO_TYPE1v2_IOMMU`, the IOMMU type this module asks a container for.
    public static let type1v2IOMMU: UInt = 3
    /// `VFIO_NOIOMMU_IOMMU`, for groups opened as /dev/vfio/noiommu-N.
    public static let noIOMMU: UInt = 8

    /// `VFIO_GROUP_FLAGS_VIABLE`.
    public static let groupFlagViable: UInt32 = 1 << 0
    /// `VFIO_GROUP_FLAGS_CONTAINER_SET`.
    public static let groupFlagContainerSet: UInt32 = 1 << 1

    // MARK: VFIO_DEVICE_FEATURE flags

    /// `VFIO_PRECOPY_INFO_REINIT`: bit 0 of `vfio_precopy_info.flags` on output, after the
    /// `MIG_PRECOPY_INFOv2` opt-in.
    public static let precopyInfoReinit: UInt32 = 1 << 0
    /// `VFIO_DEVICE_FEATURE_MASK`: bits 15:0 hold the feature index.
    public static let featureMask: UInt32 = 0xFFFF
    /// `VFIO_DEVICE_FEATURE_GET`.
    public static let featureGet: UInt32 = 1 << 16
    /// `VFIO_DEVICE_FEATURE_SET`.
    public static let featureSet: UInt32 = 1 << 17
    /// `VFIO_DEVICE_FEATURE_PROBE`.
    public static let featureProbe: UInt32 = 1 << 18
}

/// Feature indexes of `VFIO_DEVICE_FEATURE` (bits 15:0 of its `flags`).
public enum VFIOFeature: UInt32, Sendable, CaseIterable {
    /// `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN` (SET, 16-byte UUID).
    case pciVFToken = 0
    /// `VFIO_DEVICE_FEATURE_MIGRATION` (GET, `u64 flags`).
    case migration = 1
    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` (GET/SET, `u32 device_state; s32 data_fd`).
    case migDeviceState = 2
    /// `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY` (SET).
    case lowPowerEntry = 3
    /// `VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP` (SET).
    case lowPowerEntryWithWakeup = 4
    /// `VFIO_DEVICE_FEATURE_LOW_POWER_EXIT` (SET).
    case lowPowerExit = 5
    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` (SET, `vfio_device_feature_dma_logging_control`).
    case dmaLoggingStart = 6
    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP` (SET, no payload).
    case dmaLoggingStop = 7
    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT` (GET, `vfio_device_feature_dma_logging_report`).
    case dmaLoggingReport = 8
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` (GET, `u64 stop_copy_length`).
    case migDataSize = 9
    /// `VFIO_DEVICE_FEATURE_BUS_MASTER` (SET, `u32 op`; CDX bus only).
    case busMaster = 10
    /// `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (SET, no payload; 2026 uAPI): opts in to
    /// `VFIO_MIG_GET_PRECOPY_INFO` answering with valid `flags` (``VFIOPrecopyInfo/reinit``).
    case migPrecopyInfoV2 = 12
}
