// The VFIO migration uAPI v2 numbers this check needs (docs: shared/reference/vfio-uapi-spec.md §1).
// Every VFIO ioctl is _IO(';', 100 + n): no direction or size bits, so the request is 0x3B00 | (100 + n).
// Phase 1 keeps its own copy; phase 2 switches to the project's VFIO module.

/// ioctl request numbers (x86_64, generic encoding).
enum VFIORequest {
    static let getAPIVersion: UInt = 0x3B64
    static let checkExtension: UInt = 0x3B65
    static let setIOMMU: UInt = 0x3B66
    static let groupGetStatus: UInt = 0x3B67
    static let groupSetContainer: UInt = 0x3B68
    static let groupGetDeviceFD: UInt = 0x3B6A
    static let deviceGetInfo: UInt = 0x3B6B
    static let deviceGetRegionInfo: UInt = 0x3B6C
    static let deviceReset: UInt = 0x3B6F
    static let deviceFeature: UInt = 0x3B75
    /// On the migration data fd, not the device fd.
    static let migGetPrecopyInfo: UInt = 0x3B79
}

/// IOMMU backends for VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION.
enum VFIOIOMMUType {
    static let type1: Int32 = 1
    static let type1v2: Int32 = 3
}

/// `struct vfio_device_feature` flags and feature indexes.
enum VFIOFeature {
    static let mask: UInt32 = 0xFFFF
    static let get: UInt32 = 1 << 16
    static let set: UInt32 = 1 << 17
    static let probe: UInt32 = 1 << 18

    static let migration: UInt32 = 1
    static let migDeviceState: UInt32 = 2
    static let dmaLoggingStart: UInt32 = 6
    static let migDataSize: UInt32 = 9
    /// An index no 6.12 driver knows (the feature space is 16 bits wide).
    static let unknown: UInt32 = 0x7FF0

    /// The feature header is `u32 argsz; u32 flags`.
    static let headerSize = 8
}

/// VFIO_DEVICE_FEATURE_MIGRATION flags.
enum VFIOMigrationFlags {
    static let stopCopy: UInt64 = 1
    static let p2p: UInt64 = 2
    static let preCopy: UInt64 = 4
}

/// `enum vfio_device_mig_state`.
enum MigState: UInt32, CaseIterable, CustomStringConvertible, Sendable {
    case error = 0
    case stop = 1
    case running = 2
    case stopCopy = 3
    case resuming = 4
    case runningP2P = 5
    case preCopy = 6
    case preCopyP2P = 7

    var description: String {
        switch self {
        case .error: "ERROR"
        case .stop: "STOP"
        case .running: "RUNNING"
        case .stopCopy: "STOP_COPY"
        case .resuming: "RESUMING"
        case .runningP2P: "RUNNING_P2P"
        case .preCopy: "PRE_COPY"
        case .preCopyP2P: "PRE_COPY_P2P"
        }
    }

    /// The states a flags-7 device (STOP_COPY | P2P | PRE_COPY) can be asked for.
    static let requestable: [MigState] = [.running, .runningP2P, .stop, .stopCopy, .resuming, .preCopy, .preCopyP2P]

    /// The saving group shares one data fd across its states.
    var isSaving: Bool { self == .preCopy || self == .preCopyP2P || self == .stopCopy }
    var isPreCopy: Bool { self == .preCopy || self == .preCopyP2P }
}

/// The mtty sample driver's migration stream (spec §7): header then 36 bytes per port.
enum MttyStream {
    static let magic: UInt64 = 0x7e9d_0989_8c3e_2c4e
    static let headerSize = 24
    static let portSize = 36
    static func size(ports: Int) -> Int { headerSize + portSize * ports }
}

/// `struct vfio_region_info` (32 bytes) and the PCI region indexes mtty serves.
enum VFIORegion {
    static let infoSize = 32
    static let bar0: UInt32 = 0
    static let bar1: UInt32 = 1
    /// 16550 UART register offsets inside an mtty I/O BAR.
    static let uartTX: UInt64 = 0
    static let uartLCR: UInt64 = 3
}
