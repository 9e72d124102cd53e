// Byte layouts of the VFIO/iommufd ioctl arguments (host ABI: little-endian, natural alignment).
// Each type lists its fields; `VFIOFixedLayout` encodes to and decodes from the exact bytes the kernel
// reads and writes.

/// `struct vfio_device_feature`: `u32 argsz @0; u32 flags @4; u8 data[] @8`.
public struct VFIODeviceFeatureHeader: VFIOFixedLayout {
    /// Size of the header alone.
    public static let size = 8
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.argsz, at: 0), .field(\.flags, at: 4)] }
    public static var zero: Self { Self(argsz: 0, flags: 0) }
    /// Header plus payload, in bytes.
    public var argsz: UInt32
    /// Feature index (bits 15:0) and GET/SET/PROBE bits.
    public var flags: UInt32

    public init(argsz: UInt32, flags: UInt32) {
        (self.argsz, self.flags) = (argsz, flags)
    }

    /// A request for `feature` with `operation` bits and `payloadSize` bytes of payload.
    public init(feature: VFIOFeature, operation: UInt32, payloadSize: Int) {
        self.init(argsz: UInt32(Self.size + payloadSize), flags: feature.rawValue | operation)
    }

    /// Header followed by `payload`, ready to pass to `VFIO_DEVICE_FEATURE`.
    public static func request(_ feature: VFIOFeature, _ operation: UInt32, payload: [UInt8]) -> [UInt8] {
        VFIODeviceFeatureHeader(feature: feature, operation: operation, payloadSize: payload.count).bytes + payload
    }
}

/// `struct vfio_device_feature_mig_state`: `u32 device_state @0; s32 data_fd @4` (8 bytes).
public struct VFIOMigDeviceStatePayload: VFIOFixedLayout {
    public static let size = 8
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.deviceState, at: 0), .field(\.dataFD, at: 4)] }
    public static var zero: Self { Self(deviceState: 0, dataFD: 0) }
    /// Raw `enum vfio_device_mig_state` value.
    public var deviceState: UInt32
    /// The new data fd after a SET that opened a session, else -1.
    public var dataFD: Int32

    public init(deviceState: UInt32, dataFD: Int32 = -1) {
        (self.deviceState, self.dataFD) = (deviceState, dataFD)
    }
}

/// `struct vfio_precopy_info`: `u32 argsz @0; u32 flags @4; u64 initial_bytes @8; u64 dirty_bytes @16`.
public struct VFIOPrecopyInfoLayout: VFIOFixedLayout {
    public static let size = 24
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.initialBytes, at: 8), .field(\.dirtyBytes, at: 16)]
    }
    public static var zero: Self { Self(argsz: 0) }
    public var argsz: UInt32
    /// Echoed back unchanged by v1 drivers: callers zero it going in and ignore it coming out.
    public var flags: UInt32
    public var initialBytes: UInt64
    public var dirtyBytes: UInt64

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, initialBytes: UInt64 = 0, dirtyBytes: UInt64 = 0) {
        (self.argsz, self.flags, self.initialBytes, self.dirtyBytes) = (argsz, flags, initialBytes, dirtyBytes)
    }
}

/// `struct vfio_device_info`: `u32 argsz @0; u32 flags @4; u32 num_regions @8; u32 num_irqs @12;
/// u32 cap_offset @16; u32 pad @20` (include/uapi/linux/vfio.h; the kernel needs argsz ≥ 16).
public struct VFIODeviceInfo: VFIOFixedLayout {
    public static let size = 24
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.numRegions, at: 8), .field(\.numIRQs, at: 12)]
    }
    public static var zero: Self { Self(argsz: 0) }
    public var argsz: UInt32
    /// `VFIO_DEVICE_FLAGS_RESET` (1), `VFIO_DEVICE_FLAGS_PCI` (2), …
    public var flags: UInt32
    public var numRegions: UInt32
    public var numIRQs: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, numRegions: UInt32 = 0, numIRQs: UInt32 = 0) {
        (self.argsz, self.flags, self.numRegions, self.numIRQs) = (argsz, flags, numRegions, numIRQs)
    }
}

/// `struct vfio_group_status`: `u32 argsz @0; u32 flags @4`.
public struct VFIOGroupStatus: VFIOFixedLayout {
    public static let size = 8
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.argsz, at: 0), .field(\.flags, at: 4)] }
    public static var zero: Self { Self(argsz: 0) }
    public var argsz: UInt32
    /// `VFIO_GROUP_FLAGS_VIABLE` (1), `VFIO_GROUP_FLAGS_CONTAINER_SET` (2).
    public var flags: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0) {
        (self.argsz, self.flags) = (argsz, flags)
    }
}

/// `struct vfio_device_bind_iommufd` up to its minimal size:
/// `u32 argsz @0; u32 flags @4; s32 iommufd @8; u32 out_devid @12` (16 bytes; the later
/// `u64 token_uuid_ptr @16` is not sent, so 6.6-era kernels accept the call).
public struct VFIODeviceBindIOMMUFD: VFIOFixedLayout {
    public static let size = 16
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.iommufd, at: 8), .field(\.outDevID, at: 12)]
    }
    public static var zero: Self { Self(argsz: 0, iommufd: 0) }
    public var argsz: UInt32
    public var flags: UInt32
    public var iommufd: Int32
    public var outDevID: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, iommufd: Int32, outDevID: UInt32 = 0) {
        (self.argsz, self.flags, self.iommufd, self.outDevID) = (argsz, flags, iommufd, outDevID)
    }
}

/// `struct vfio_device_attach_iommufd_pt` up to its minimal size:
/// `u32 argsz @0; u32 flags @4; u32 pt_id @8` (12 bytes; in: IOAS/HWPT id, out: HWPT id).
public struct VFIODeviceAttachIOMMUFDPT: VFIOFixedLayout {
    public static let size = 12
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.ptID, at: 8)] }
    public static var zero: Self { Self(argsz: 0, ptID: 0) }
    public var argsz: UInt32
    public var flags: UInt32
    public var ptID: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, ptID: UInt32) {
        (self.argsz, self.flags, self.ptID) = (argsz, flags, ptID)
    }
}

/// `struct iommu_ioas_alloc`: `u32 size @0; u32 flags @4; u32 out_ioas_id @8` (12 bytes).
public struct IOMMUIOASAlloc: VFIOFixedLayout {
    public static let size = 12
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.size, at: 0), .field(\.flags, at: 4), .field(\.outIOASID, at: 8)] }
    public static var zero: Self { Self(size: 0) }
    public var size: UInt32
    public var flags: UInt32
    public var outIOASID: UInt32

    public init(size: UInt32 = UInt32(Self.size), flags: UInt32 = 0, outIOASID: UInt32 = 0) {
        (self.size, self.flags, self.outIOASID) = (size, flags, outIOASID)
    }
}

/// `struct vfio_device_feature_dma_logging_range`: `u64 iova @0; u64 length @8` (16 bytes).
public struct VFIODMALoggingRange: VFIOFixedLayout {
    public static let size = 16
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.iova, at: 0), .field(\.length, at: 8)] }
    public static var zero: Self { Self(iova: 0, length: 0) }
    public var iova: UInt64
    public var length: UInt64

    public init(iova: UInt64, length: UInt64) {
        (self.iova, self.length) = (iova, length)
    }
}

/// `struct vfio_device_feature_dma_logging_control`:
/// `u64 page_size @0; u32 num_ranges @8; u32 reserved @12; u64 ranges @16` (24 bytes; `ranges` is a
/// user pointer to an array of `VFIODMALoggingRange`).
public struct VFIODMALoggingControl: VFIOFixedLayout {
    public static let size = 24
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.pageSize, at: 0), .field(\.numRanges, at: 8), .field(\.reserved, at: 12), .field(\.ranges, at: 16)]
    }
    public static var zero: Self { Self(pageSize: 0, numRanges: 0, ranges: 0) }
    /// In: the page size hint; out: the page size the driver chose.
    public var pageSize: UInt64
    public var numRanges: UInt32
    public var reserved: UInt32
    public var ranges: UInt64

    public init(pageSize: UInt64, numRanges: UInt32, reserved: UInt32 = 0, ranges: UInt64) {
        (self.pageSize, self.numRanges, self.reserved, self.ranges) = (pageSize, numRanges, reserved, ranges)
    }
}

/// `struct vfio_device_feature_dma_logging_report`:
/// `u64 iova @0; u64 length @8; u64 page_size @16; u64 bitmap @24` (32 bytes; `bitmap` is a user
/// pointer to a little-endian u64 bitmap the kernel only sets bits in).
public struct VFIODMALoggingReport: VFIOFixedLayout {
    public static let size = 32
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.iova, at: 0), .field(\.length, at: 8), .field(\.pageSize, at: 16), .field(\.bitmap, at: 24)]
    }
    public static var zero: Self { Self(iova: 0, length: 0, pageSize: 0, bitmap: 0) }
    public var iova: UInt64
    public var length: UInt64
    public var pageSize: UInt64
    public var bitmap: UInt64

    public init(iova: UInt64, length: UInt64, pageSize: UInt64, bitmap: UInt64) {
        (self.iova, self.length, self.pageSize, self.bitmap) = (iova, length, pageSize, bitmap)
    }
}
