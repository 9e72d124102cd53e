// The dirty-tracking part of the uAPI: type1 container ioctls (include/uapi/linux/vfio.h, "API for
// Type1 VFIO IOMMU") and iommufd HWPT ioctls (include/uapi/linux/iommufd.h), with their layouts.
// The numbers and offsets are those of the headers (read in torvalds/linux; docs/vfio.md lists them).

extension VFIOUAPI {
    // MARK: type1 container ioctls (/dev/vfio/vfio after VFIO_SET_IOMMU)

    /// `VFIO_IOMMU_GET_INFO` (container; `struct vfio_iommu_type1_info` + capability chain), 0x3B70.
    public static let iommuGetInfo: UInt = request(12)
    /// `VFIO_IOMMU_MAP_DMA` (container; `struct vfio_iommu_type1_dma_map`), 0x3B71.
    public static let iommuMapDMA: UInt = request(13)
    /// `VFIO_IOMMU_UNMAP_DMA` (container; `struct vfio_iommu_type1_dma_unmap`), 0x3B72.
    public static let iommuUnmapDMA: UInt = request(14)
    /// `VFIO_IOMMU_DIRTY_PAGES` (container; `struct vfio_iommu_type1_dirty_bitmap`), 0x3B75: the
    /// same number as `VFIO_DEVICE_FEATURE`; the fd decides which runs.
    public static let iommuDirtyPages: UInt = request(17)

    /// `VFIO_IOMMU_INFO_PGSIZES`: `iova_pgsizes` is valid.
    public static let iommuInfoPageSizes: UInt32 = 1 << 0
    /// `VFIO_IOMMU_INFO_CAPS`: `cap_offset` is valid (when the buffer was large enough).
    public static let iommuInfoCaps: UInt32 = 1 << 1
    /// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`.
    public static let type1CapIOVARange: UInt16 = 1
    /// `VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`: the container logs dirty pages (since 5.8).
    public static let type1CapMigration: UInt16 = 2
    /// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`.
    public static let type1CapDMAAvail: UInt16 = 3

    /// `VFIO_DMA_MAP_FLAG_READ`.
    public static let dmaMapRead: UInt32 = 1 << 0
    /// `VFIO_DMA_MAP_FLAG_WRITE`.
    public static let dmaMapWrite: UInt32 = 1 << 1
    /// `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`.
    public static let dmaUnmapGetDirtyBitmap: UInt32 = 1 << 0
    /// `VFIO_DMA_UNMAP_FLAG_ALL`.
    public static let dmaUnmapAll: UInt32 = 1 << 1

    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`.
    public static let dirtyPagesStart: UInt32 = 1 << 0
    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP`.
    public static let dirtyPagesStop: UInt32 = 1 << 1
    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`.
    public static let dirtyPagesGetBitmap: UInt32 = 1 << 2

    /// `DIRTY_BITMAP_SIZE_MAX` of vfio_iommu_type1.c: `INT_MAX` pages at one bit each, rounded up
    /// to u64 words (256 MiB). The kernel answers EINVAL for a larger bitmap.
    public static let type1MaxDirtyBitmapSize: UInt64 = 256 << 20

    // MARK: iommufd ioctls (/dev/iommu)

    /// `IOMMU_IOAS_MAP` (`struct iommu_ioas_map`), 0x3B85.
    public static let iommuIOASMap: UInt = 0x3B85
    /// `IOMMU_IOAS_UNMAP` (`struct iommu_ioas_unmap`), 0x3B86.
    public static let iommuIOASUnmap: UInt = 0x3B86
    /// `IOMMU_HWPT_ALLOC` (`struct iommu_hwpt_alloc`), 0x3B89.
    public static let iommuHWPTAlloc: UInt = 0x3B89
    /// `IOMMU_GET_HW_INFO` (`struct iommu_hw_info`), 0x3B8A.
    public static let iommuGetHWInfo: UInt = 0x3B8A
    /// `IOMMU_HWPT_SET_DIRTY_TRACKING` (`struct iommu_hwpt_set_dirty_tracking`), 0x3B8B (6.7).
    public static let iommuHWPTSetDirtyTracking: UInt = 0x3B8B
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP` (`struct iommu_hwpt_get_dirty_bitmap`), 0x3B8C (6.7).
    public static let iommuHWPTGetDirtyBitmap: UInt = 0x3B8C

    /// `IOMMU_IOAS_MAP_FIXED_IOVA`.
    public static let ioasMapFixedIOVA: UInt32 = 1 << 0
    /// `IOMMU_IOAS_MAP_WRITEABLE`.
    public static let ioasMapWriteable: UInt32 = 1 << 1
    /// `IOMMU_IOAS_MAP_READABLE`.
    public static let ioasMapReadable: UInt32 = 1 << 2
    /// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: the HWPT's domain must track dirty pages (EOPNOTSUPP
    /// from an IOMMU without `IOMMU_CAP_DIRTY_TRACKING`).
    public static let hwptAllocDirtyTracking: UInt32 = 1 << 1
    /// `IOMMU_HWPT_DIRTY_TRACKING_ENABLE`.
    public static let hwptDirtyTrackingEnable: UInt32 = 1
    /// `IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR`.
    public static let hwptGetDirtyBitmapNoClear: UInt32 = 1
    /// `IOMMU_HW_CAP_DIRTY_TRACKING` in `iommu_hw_info.out_capabilities`.
    public static let hwCapDirtyTracking: UInt64 = 1 << 0

    /// `LOG_MAX_RANGES` of vfio_main.c: the DMA-logging ranges that fit one 4 KiB kernel page
    /// (more: E2BIG).
    public static let dmaLoggingMaxRanges = 4096 / VFIODMALoggingRange.size
}

/// `struct vfio_iommu_type1_info`: `u32 argsz @0; u32 flags @4; u64 iova_pgsizes @8;
/// u32 cap_offset @16; u32 pad @20` (24 bytes; the kernel needs argsz ≥ 16).
public struct VFIOIOMMUType1Info: VFIOFixedLayout {
    public static let size = 24
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.iovaPageSizes, at: 8), .field(\.capOffset, at: 16)]
    }
    public static var zero: Self { Self(argsz: 0) }
    public var argsz: UInt32
    public var flags: UInt32
    public var iovaPageSizes: UInt64
    public var capOffset: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, iovaPageSizes: UInt64 = 0, capOffset: UInt32 = 0) {
        (self.argsz, self.flags, self.iovaPageSizes, self.capOffset) = (argsz, flags, iovaPageSizes, capOffset)
    }
}

/// `struct vfio_info_cap_header`: `u16 id @0; u16 version @2; u32 next @4` (8 bytes; `next` is an
/// offset from the start of the info buffer, 0 ends the chain).
public struct VFIOInfoCapHeader: VFIOFixedLayout {
    public static let size = 8
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.id, at: 0), .field(\.version, at: 2), .field(\.next, at: 4)] }
    public static var zero: Self { Self(id: 0, version: 0, next: 0) }
    public var id: UInt16
    public var version: UInt16
    public var next: UInt32

    public init(id: UInt16, version: UInt16, next: UInt32) {
        (self.id, self.version, self.next) = (id, version, next)
    }
}

/// `struct vfio_iommu_type1_info_cap_migration`: header @0; `u32 flags @8; u64 pgsize_bitmap @16;
/// u64 max_dirty_bitmap_size @24` (32 bytes).
public struct VFIOIOMMUType1MigrationCap: VFIOFixedLayout {
    public static let size = 32
    public static var fields: [VFIOLayoutField<Self>] {
        [
            .field(\.id, at: 0), .field(\.version, at: 2), .field(\.next, at: 4), .field(\.flags, at: 8),
            .field(\.pageSizeBitmap, at: 16), .field(\.maxDirtyBitmapSize, at: 24)
        ]
    }
    public static var zero: Self { Self(pageSizeBitmap: 0, maxDirtyBitmapSize: 0) }
    public var id: UInt16
    public var version: UInt16
    public var next: UInt32
    public var flags: UInt32
    /// The page sizes the container logs at (the smallest IOMMU page size, one bit).
    public var pageSizeBitmap: UInt64
    /// The largest bitmap, in bytes, one GET_BITMAP accepts.
    public var maxDirtyBitmapSize: UInt64

    public init(
        id: UInt16 = VFIOUAPI.type1CapMigration, version: UInt16 = 1, next: UInt32 = 0, flags: UInt32 = 0,
        pageSizeBitmap: UInt64, maxDirtyBitmapSize: UInt64
    ) {
        (self.id, self.version, self.next, self.flags) = (id, version, next, flags)
        (self.pageSizeBitmap, self.maxDirtyBitmapSize) = (pageSizeBitmap, maxDirtyBitmapSize)
    }
}

/// `struct vfio_iommu_type1_info_dma_avail`: header @0; `u32 avail @8` (12 bytes, padded to 16 in
/// the chain).
public struct VFIOIOMMUType1DMAAvailCap: VFIOFixedLayout {
    public static let size = 12
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.id, at: 0), .field(\.version, at: 2), .field(\.next, at: 4), .field(\.available, at: 8)]
    }
    public static var zero: Self { Self(available: 0) }
    public var id: UInt16
    public var version: UInt16
    public var next: UInt32
    public var available: UInt32

    public init(id: UInt16 = VFIOUAPI.type1CapDMAAvail, version: UInt16 = 1, next: UInt32 = 0, available: UInt32) {
        (self.id, self.version, self.next, self.available) = (id, version, next, available)
    }
}

/// `struct vfio_iommu_type1_dma_map`: `u32 argsz @0; u32 flags @4; u64 vaddr @8; u64 iova @16;
/// u64 size @24` (32 bytes).
public struct VFIOIOMMUType1DMAMap: VFIOFixedLayout {
    public static let size = 32
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.vaddr, at: 8), .field(\.iova, at: 16), .field(\.size, at: 24)]
    }
    public static var zero: Self { Self(argsz: 0, flags: 0, vaddr: 0, iova: 0, size: 0) }
    public var argsz: UInt32
    public var flags: UInt32
    public var vaddr: UInt64
    public var iova: UInt64
    public var size: UInt64

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32, vaddr: UInt64, iova: UInt64, size: UInt64) {
        (self.argsz, self.flags, self.vaddr, self.iova, self.size) = (argsz, flags, vaddr, iova, size)
    }
}

/// `struct vfio_iommu_type1_dma_unmap`: `u32 argsz @0; u32 flags @4; u64 iova @8; u64 size @16`
/// (24 bytes; `size` comes back as the bytes unmapped).
public struct VFIOIOMMUType1DMAUnmap: VFIOFixedLayout {
    public static let size = 24
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.iova, at: 8), .field(\.size, at: 16)]
    }
    public static var zero: Self { Self(argsz: 0, flags: 0, iova: 0, size: 0) }
    public var argsz: UInt32
    public var flags: UInt32
    public var iova: UInt64
    public var size: UInt64

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, iova: UInt64, size: UInt64) {
        (self.argsz, self.flags, self.iova, self.size) = (argsz, flags, iova, size)
    }
}

/// `struct vfio_iommu_type1_dirty_bitmap` followed, for GET_BITMAP, by
/// `struct vfio_iommu_type1_dirty_bitmap_get`: `u32 argsz @0; u32 flags @4; u64 iova @8;
/// u64 size @16; u64 bitmap.pgsize @24; u64 bitmap.size @32; u64 bitmap.data @40` (48 bytes; 8
/// for START and STOP, whose argsz is 8).
public struct VFIOIOMMUType1DirtyBitmap: VFIOFixedLayout {
    public static let size = 48
    /// The header alone (START, STOP).
    public static let headerSize = 8
    public static var fields: [VFIOLayoutField<Self>] {
        [
            .field(\.argsz, at: 0), .field(\.flags, at: 4), .field(\.iova, at: 8), .field(\.length, at: 16),
            .field(\.pageSize, at: 24), .field(\.bitmapSize, at: 32), .field(\.bitmapData, at: 40)
        ]
    }
    public static var zero: Self { Self(argsz: 0, flags: 0) }
    public var argsz: UInt32
    public var flags: UInt32
    public var iova: UInt64
    /// `size` of the IOVA range.
    public var length: UInt64
    /// `bitmap.pgsize`: must be the container's smallest page size.
    public var pageSize: UInt64
    /// `bitmap.size` in bytes.
    public var bitmapSize: UInt64
    /// `bitmap.data`: a user pointer to zeroed u64 words.
    public var bitmapData: UInt64

    public init(
        argsz: UInt32, flags: UInt32, iova: UInt64 = 0, length: UInt64 = 0, pageSize: UInt64 = 0, bitmapSize: UInt64 = 0,
        bitmapData: UInt64 = 0
    ) {
        (self.argsz, self.flags, self.iova, self.length) = (argsz, flags, iova, length)
        (self.pageSize, self.bitmapSize, self.bitmapData) = (pageSize, bitmapSize, bitmapData)
    }
}

/// `struct iommu_ioas_map`: `u32 size @0; u32 flags @4; u32 ioas_id @8; u32 __reserved @12;
/// u64 user_va @16; u64 length @24; u64 iova @32` (40 bytes).
public struct IOMMUIOASMap: VFIOFixedLayout {
    public static let size = 40
    public static var fields: [VFIOLayoutField<Self>] {
        [
            .field(\.size, at: 0), .field(\.flags, at: 4), .field(\.ioasID, at: 8), .field(\.reserved, at: 12),
            .field(\.userVA, at: 16), .field(\.length, at: 24), .field(\.iova, at: 32)
        ]
    }
    public static var zero: Self { Self(size: 0, flags: 0, ioasID: 0, userVA: 0, length: 0, iova: 0) }
    public var size: UInt32
    public var flags: UInt32
    public var ioasID: UInt32
    public var reserved: UInt32 = 0
    public var userVA: UInt64
    public var length: UInt64
    public var iova: UInt64

    public init(size: UInt32 = UInt32(Self.size), flags: UInt32, ioasID: UInt32, userVA: UInt64, length: UInt64, iova: UInt64) {
        (self.size, self.flags, self.ioasID, self.userVA, self.length, self.iova) = (size, flags, ioasID, userVA, length, iova)
    }
}

/// `struct iommu_ioas_unmap`: `u32 size @0; u32 ioas_id @4; u64 iova @8; u64 length @16` (24 bytes).
public struct IOMMUIOASUnmap: VFIOFixedLayout {
    public static let size = 24
    public static var fields: [VFIOLayoutField<Self>] {
        [.field(\.size, at: 0), .field(\.ioasID, at: 4), .field(\.iova, at: 8), .field(\.length, at: 16)]
    }
    public static var zero: Self { Self(size: 0, ioasID: 0, iova: 0, length: 0) }
    public var size: UInt32
    public var ioasID: UInt32
    public var iova: UInt64
    public var length: UInt64

    public init(size: UInt32 = UInt32(Self.size), ioasID: UInt32, iova: UInt64, length: UInt64) {
        (self.size, self.ioasID, self.iova, self.length) = (size, ioasID, iova, length)
    }
}

/// `struct iommu_hwpt_alloc` up to `data_uptr`: `u32 size @0; u32 flags @4; u32 dev_id @8;
/// u32 pt_id @12; u32 out_hwpt_id @16; u32 __reserved @20; u32 data_type @24; u32 data_len @28;
/// u64 data_uptr @32` (40 bytes, the 6.7 size; 6.6 accepts 24).
public struct IOMMUHWPTAlloc: VFIOFixedLayout {
    public static let size = 40
    public static var fields: [VFIOLayoutField<Self>] {
        [
            .field(\.size, at: 0), .field(\.flags, at: 4), .field(\.devID, at: 8), .field(\.ptID, at: 12),
            .field(\.outHWPTID, at: 16)
        ]
    }
    public static var zero: Self { Self(size: 0, flags: 0, devID: 0, ptID: 0) }
    public var size: UInt32
    public var flags: UInt32
    public var devID: UInt32
    /// The IOAS (or parent HWPT) the new HWPT takes its mappings from.
    public var ptID: UInt32
    public var outHWPTID: UInt32

    public init(size: UInt32 = UInt32(Self.size), flags: UInt32, devID: UInt32, ptID: UInt32, outHWPTID: UInt32 = 0) {
        (self.size, self.flags, self.devID, self.ptID, self.outHWPTID) = (size, flags, devID, ptID, outHWPTID)
    }
}

/// `struct iommu_hwpt_set_dirty_tracking`: `u32 size @0; u32 flags @4; u32 hwpt_id @8;
/// u32 __reserved @12` (16 bytes).
public struct IOMMUHWPTSetDirtyTracking: VFIOFixedLayout {
    public static let size = 16
    public static var fields: [VFIOLayoutField<Self>] { [.field(\.size, at: 0), .field(\.flags, at: 4), .field(\.hwptID, at: 8)] }
    public static var zero: Self { Self(size: 0, flags: 0, hwptID: 0) }
    public var size: UInt32
    public var flags: UInt32
    public var hwptID: UInt32

    public init(size: UInt32 = UInt32(Self.size), flags: UInt32, hwptID: UInt32) {
        (self.size, self.flags, self.hwptID) = (size, flags, hwptID)
    }
}

/// `struct iommu_hwpt_get_dirty_bitmap`: `u32 size @0; u32 hwpt_id @4; u32 flags @8;
/// u32 __reserved @12; u64 iova @16; u64 length @24; u64 page_size @32; u64 data @40` (48 bytes).
public struct IOMMUHWPTGetDirtyBitmap: VFIOFixedLayout {
    public static let size = 48
    public static var fields: [VFIOLayoutField<Self>] {
        [
            .field(\.size, at: 0), .field(\.hwptID, at: 4), .field(\.flags, at: 8), .field(\.reserved, at: 12),
            .field(\.iova, at: 16), .field(\.length, at: 24), .field(\.pageSize, at: 32), .field(\.data, at: 40)
        ]
    }
    public static var zero: Self { Self(size: 0, hwptID: 0, flags: 0, iova: 0, length: 0, pageSize: 0, data: 0) }
    public var size: UInt32
    public var hwptID: UInt32
    public var flags: UInt32
    public var reserved: UInt32 = 0
    public var iova: UInt64
    public var length: UInt64
    public var pageSize: UInt64
    /// A user pointer to the u64 words the kernel sets bits in.
    public var data: UInt64

    public init(
        size: UInt32 = UInt32(Self.size), hwptID: UInt32, flags: UInt32 = 0, iova: UInt64, length: UInt64, pageSize: UInt64,
        data: UInt64
    ) {
        (self.size, self.hwptID, self.flags, self.iova) = (size, hwptID, flags, iova)
        (self.length, self.pageSize, self.data) = (length, pageSize, data)
    }
}
