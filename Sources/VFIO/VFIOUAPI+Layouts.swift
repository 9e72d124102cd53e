// Byte layouts of the VFIO/iommufd ioctl arguments (host ABI: little-endian, natural alignment).
// Each type encodes to and decodes from the exact bytes the kernel reads and writes.

/// Little-endian field access into byte arrays, bounds-checked by the callers' size checks.
enum LittleEndianBytes {
    static func load<T: FixedWidthInteger>(_: T.Type, from bytes: some Collection<UInt8>, at offset: Int) -> T {
        var value: T = 0
        var index = bytes.index(bytes.startIndex, offsetBy: offset)
        for shift in stride(from: 0, to: T.bitWidth, by: 8) {
            value |= T(truncatingIfNeeded: bytes[index]) << shift
            index = bytes.index(after: index)
        }
        return value
    }

    static func store<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        for (i, shift) in stride(from: 0, to: T.bitWidth, by: 8).enumerated() {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> shift)
        }
    }

    static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: T.bitWidth, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> shift))
        }
    }
}

/// `struct vfio_device_feature`: `u32 argsz @0; u32 flags @4; u8 data[] @8`.
public struct VFIODeviceFeatureHeader: Sendable, Equatable {
    /// Size of the header alone.
    public static let size = 8
    /// Header plus payload, in bytes.
    public var argsz: UInt32
    /// Feature index (bits 15:0) and GET/SET/PROBE bits.
    public var flags: UInt32

    public init(argsz: UInt32, flags: UInt32) {
        self.argsz = argsz
        self.flags = flags
    }

    /// A request for `feature` with `operation` bits and `payloadSize` bytes of payload.
    public init(feature: VFIOFeature, operation: UInt32, payloadSize: Int) {
        self.init(argsz: UInt32(Self.size + payloadSize), flags: feature.rawValue | operation)
    }

    /// Decodes the first 8 bytes; nil when fewer are given.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        argsz = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
    }

    /// The 8 bytes of the header.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(argsz, to: &out)
        LittleEndianBytes.append(flags, to: &out)
        return out
    }

    /// Header followed by `payload`, ready to pass to `VFIO_DEVICE_FEATURE`.
    public static func request(_ feature: VFIOFeature, _ operation: UInt32, payload: [UInt8]) -> [UInt8] {
        VFIODeviceFeatureHeader(feature: feature, operation: operation, payloadSize: payload.count).bytes + payload
    }
}

/// `struct vfio_device_feature_mig_state`: `u32 device_state @0; s32 data_fd @4` (8 bytes).
public struct VFIOMigDeviceStatePayload: Sendable, Equatable {
    public static let size = 8
    /// Raw `enum vfio_device_mig_state` value.
    public var deviceState: UInt32
    /// The new data fd after a SET that opened a session, else -1.
    public var dataFD: Int32

    public init(deviceState: UInt32, dataFD: Int32 = -1) {
        self.deviceState = deviceState
        self.dataFD = dataFD
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        deviceState = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        dataFD = LittleEndianBytes.load(Int32.self, from: bytes, at: 4)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(deviceState, to: &out)
        LittleEndianBytes.append(dataFD, to: &out)
        return out
    }
}

/// `struct vfio_precopy_info`: `u32 argsz @0; u32 flags @4; u64 initial_bytes @8; u64 dirty_bytes @16`.
public struct VFIOPrecopyInfoLayout: Sendable, Equatable {
    public static let size = 24
    public var argsz: UInt32
    /// Echoed back unchanged by v1 drivers: callers zero it going in and ignore it coming out.
    public var flags: UInt32
    public var initialBytes: UInt64
    public var dirtyBytes: UInt64

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, initialBytes: UInt64 = 0, dirtyBytes: UInt64 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.initialBytes = initialBytes
        self.dirtyBytes = dirtyBytes
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        argsz = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
        initialBytes = LittleEndianBytes.load(UInt64.self, from: bytes, at: 8)
        dirtyBytes = LittleEndianBytes.load(UInt64.self, from: bytes, at: 16)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(argsz, to: &out)
        LittleEndianBytes.append(flags, to: &out)
        LittleEndianBytes.append(initialBytes, to: &out)
        LittleEndianBytes.append(dirtyBytes, to: &out)
        return out
    }
}

/// `struct vfio_device_info`: `u32 argsz @0; u32 flags @4; u32 num_regions @8; u32 num_irqs @12;
/// u32 cap_offset @16; u32 pad @20` (include/uapi/linux/vfio.h; the kernel needs argsz ≥ 16).
public struct VFIODeviceInfo: Sendable, Equatable {
    public static let size = 24
    public var argsz: UInt32
    /// `VFIO_DEVICE_FLAGS_RESET` (1), `VFIO_DEVICE_FLAGS_PCI` (2), …
    public var flags: UInt32
    public var numRegions: UInt32
    public var numIRQs: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, numRegions: UInt32 = 0, numIRQs: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.numRegions = numRegions
        self.numIRQs = numIRQs
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        argsz = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
        numRegions = LittleEndianBytes.load(UInt32.self, from: bytes, at: 8)
        numIRQs = LittleEndianBytes.load(UInt32.self, from: bytes, at: 12)
    }

    /// The 24 bytes, `cap_offset` and the padding zero.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        for v in [argsz, flags, numRegions, numIRQs, 0, 0] { LittleEndianBytes.append(v, to: &out) }
        return out
    }
}

/// `struct vfio_group_status`: `u32 argsz @0; u32 flags @4`.
public struct VFIOGroupStatus: Sendable, Equatable {
    public static let size = 8
    public var argsz: UInt32
    /// `VFIO_GROUP_FLAGS_VIABLE` (1), `VFIO_GROUP_FLAGS_CONTAINER_SET` (2).
    public var flags: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        argsz = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(argsz, to: &out)
        LittleEndianBytes.append(flags, to: &out)
        return out
    }
}

/// `struct vfio_device_bind_iommufd` up to its minimal size:
/// `u32 argsz @0; u32 flags @4; s32 iommufd @8; u32 out_devid @12` (16 bytes; the later
/// `u64 token_uuid_ptr @16` is not sent, so 6.6-era kernels accept the call).
public struct VFIODeviceBindIOMMUFD: Sendable, Equatable {
    public static let size = 16
    public var argsz: UInt32
    public var flags: UInt32
    public var iommufd: Int32
    public var outDevID: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, iommufd: Int32, outDevID: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.iommufd = iommufd
        self.outDevID = outDevID
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        argsz = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
        iommufd = LittleEndianBytes.load(Int32.self, from: bytes, at: 8)
        outDevID = LittleEndianBytes.load(UInt32.self, from: bytes, at: 12)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(argsz, to: &out)
        LittleEndianBytes.append(flags, to: &out)
        LittleEndianBytes.append(iommufd, to: &out)
        LittleEndianBytes.append(outDevID, to: &out)
        return out
    }
}

/// `struct vfio_device_attach_iommufd_pt` up to its minimal size:
/// `u32 argsz @0; u32 flags @4; u32 pt_id @8` (12 bytes; in: IOAS/HWPT id, out: HWPT id).
public struct VFIODeviceAttachIOMMUFDPT: Sendable, Equatable {
    public static let size = 12
    public var argsz: UInt32
    public var flags: UInt32
    public var ptID: UInt32

    public init(argsz: UInt32 = UInt32(Self.size), flags: UInt32 = 0, ptID: UInt32) {
        self.argsz = argsz
        self.flags = flags
        self.ptID = ptID
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        argsz = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
        ptID = LittleEndianBytes.load(UInt32.self, from: bytes, at: 8)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(argsz, to: &out)
        LittleEndianBytes.append(flags, to: &out)
        LittleEndianBytes.append(ptID, to: &out)
        return out
    }
}

/// `struct iommu_ioas_alloc`: `u32 size @0; u32 flags @4; u32 out_ioas_id @8` (12 bytes).
public struct IOMMUIOASAlloc: Sendable, Equatable {
    public static let size = 12
    public var size: UInt32
    public var flags: UInt32
    public var outIOASID: UInt32

    public init(size: UInt32 = UInt32(Self.size), flags: UInt32 = 0, outIOASID: UInt32 = 0) {
        self.size = size
        self.flags = flags
        self.outIOASID = outIOASID
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        size = LittleEndianBytes.load(UInt32.self, from: bytes, at: 0)
        flags = LittleEndianBytes.load(UInt32.self, from: bytes, at: 4)
        outIOASID = LittleEndianBytes.load(UInt32.self, from: bytes, at: 8)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(size, to: &out)
        LittleEndianBytes.append(flags, to: &out)
        LittleEndianBytes.append(outIOASID, to: &out)
        return out
    }
}

/// `struct vfio_device_feature_dma_logging_range`: `u64 iova @0; u64 length @8` (16 bytes).
public struct VFIODMALoggingRange: Sendable, Equatable {
    public static let size = 16
    public var iova: UInt64
    public var length: UInt64

    public init(iova: UInt64, length: UInt64) {
        self.iova = iova
        self.length = length
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(iova, to: &out)
        LittleEndianBytes.append(length, to: &out)
        return out
    }
}

/// `struct vfio_device_feature_dma_logging_control`:
/// `u64 page_size @0; u32 num_ranges @8; u32 reserved @12; u64 ranges @16` (24 bytes; `ranges` is a
/// user pointer to an array of `VFIODMALoggingRange`).
public struct VFIODMALoggingControl: Sendable, Equatable {
    public static let size = 24
    /// In: the page size hint; out: the page size the driver chose.
    public var pageSize: UInt64
    public var numRanges: UInt32
    public var reserved: UInt32
    public var ranges: UInt64

    public init(pageSize: UInt64, numRanges: UInt32, reserved: UInt32 = 0, ranges: UInt64) {
        self.pageSize = pageSize
        self.numRanges = numRanges
        self.reserved = reserved
        self.ranges = ranges
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        pageSize = LittleEndianBytes.load(UInt64.self, from: bytes, at: 0)
        numRanges = LittleEndianBytes.load(UInt32.self, from: bytes, at: 8)
        reserved = LittleEndianBytes.load(UInt32.self, from: bytes, at: 12)
        ranges = LittleEndianBytes.load(UInt64.self, from: bytes, at: 16)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(pageSize, to: &out)
        LittleEndianBytes.append(numRanges, to: &out)
        LittleEndianBytes.append(reserved, to: &out)
        LittleEndianBytes.append(ranges, to: &out)
        return out
    }
}

/// `struct vfio_device_feature_dma_logging_report`:
/// `u64 iova @0; u64 length @8; u64 page_size @16; u64 bitmap @24` (32 bytes; `bitmap` is a user
/// pointer to a little-endian u64 bitmap the kernel only sets bits in).
public struct VFIODMALoggingReport: Sendable, Equatable {
    public static let size = 32
    public var iova: UInt64
    public var length: UInt64
    public var pageSize: UInt64
    public var bitmap: UInt64

    public init(iova: UInt64, length: UInt64, pageSize: UInt64, bitmap: UInt64) {
        self.iova = iova
        self.length = length
        self.pageSize = pageSize
        self.bitmap = bitmap
    }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        iova = LittleEndianBytes.load(UInt64.self, from: bytes, at: 0)
        length = LittleEndianBytes.load(UInt64.self, from: bytes, at: 8)
        pageSize = LittleEndianBytes.load(UInt64.self, from: bytes, at: 16)
        bitmap = LittleEndianBytes.load(UInt64.self, from: bytes, at: 24)
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        LittleEndianBytes.append(iova, to: &out)
        LittleEndianBytes.append(length, to: &out)
        LittleEndianBytes.append(pageSize, to: &out)
        LittleEndianBytes.append(bitmap, to: &out)
        return out
    }
}
