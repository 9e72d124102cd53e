import SystemPackage
import VFIO

/// How a `SimulatedVFIODevice` behaves: its flags, its migration payload, its timing and its faults.
/// Content is deterministic from `seed`; nothing is held in memory in proportion to the state size.
public struct SimulatedVFIOConfiguration: Sendable, Equatable {
    /// The bytes the device's save fd produces and its resume fd accepts.
    public enum Payload: Sendable, Equatable {
        /// The mtty sample's `struct mtty_data`: a 24-byte header (magic 0x7e9d09898c3e2c4e, version 1.0,
        /// nr_ports, flags 0) then 36 bytes per port. PRE_COPY exposes the header only; the ports follow
        /// in STOP_COPY. Resume validates the header (EFAULT), refuses extra bytes (ENOMEM) and fails
        /// RESUMING→STOP when short (EINVAL).
        case mtty(ports: Int)
        /// The mlx5 record stream (16-byte little-endian headers: u64 size, u32 flags, u32 tag).
        case mlx5(MLX5Payload)
        /// A fixed blob (hisi_acc, qat, pds style) of `size` bytes, whose first `initialBytes` are
        /// readable in PRE_COPY. Resume refuses extra bytes (ENOMEM) and fails RESUMING→STOP when short.
        case opaque(size: UInt64, initialBytes: UInt64)
    }

    /// mlx5 record stream parameters.
    public struct MLX5Payload: Sendable, Equatable {
        /// Size of a full firmware image: the initial PRE_COPY image and the STOP→STOP_COPY image.
        public var imageSize: UInt64
        /// Size of the final image after pre-copy, before the dirty bytes not yet saved are added.
        public var finalImageSize: UInt64
        /// Whether a PRE_COPY session starts with the optional STOP_COPY_SIZE record (tag 1), as 6.3+ does.
        public var stopCopySizeRecord: Bool

        public init(imageSize: UInt64, finalImageSize: UInt64, stopCopySizeRecord: Bool = true) {
            (self.imageSize, self.finalImageSize, self.stopCopySizeRecord) = (imageSize, finalImageSize, stopCopySizeRecord)
        }
    }

    /// What a read at the temporary end of data in PRE_COPY states returns.
    public enum PreCopyEndOfData: Sendable, Equatable {
        /// Fail with ENOMSG (mlx5, virtio; what the uAPI asks for).
        case enomsg
        /// Return 0 (hisi_acc, qat, mtty).
        case zero
    }

    /// What `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` answers.
    public enum DataSize: Sendable, Equatable {
        /// The bytes a STOP_COPY would still produce from now (mlx5 queries firmware each time).
        case exact
        /// The exact figure plus every dirty byte accrued since open or reset: an estimate that grows
        /// while the device runs.
        case growingEstimate
        /// A constant whatever the state (pds answers 65536).
        case constant(UInt64)
    }

    /// How a device in ERROR answers a SET.
    public enum ErrorStyle: Sendable, Equatable {
        /// The core FSM's answer: EINVAL.
        case core
        /// pds: EIO without running the FSM.
        case pds
    }

    /// Time the destination spends loading, modelling mlx5's firmware resource allocation.
    public struct LoadCost: Sendable, Equatable {
        /// Spent by the write that completes the initial data (mlx5: the first FW_DATA record;
        /// mtty: the header; opaque: the initial bytes).
        public var initial: Duration
        /// Spent by the write that completes the final data (mlx5: every later FW_DATA record;
        /// mtty and opaque: the last byte).
        public var final: Duration

        public init(initial: Duration = .zero, final: Duration = .zero) { (self.initial, self.final) = (initial, final) }

        public static let none = LoadCost()
    }

    /// A failure injected at one arc of the state machine.
    public struct ArcFailure: Sendable, Equatable {
        /// The arc: the single step `from`→`to` the driver is about to take.
        public var from: VFIODeviceState
        public var to: VFIODeviceState
        /// The errno the SET returns.
        public var errno: Errno
        /// Whether the device then enters ERROR (else it stays at the last completed step).
        public var entersError: Bool
        /// How many times it fires (nil: every time).
        public var times: Int?

        public init(from: VFIODeviceState, to: VFIODeviceState, errno: Errno = .ioError, entersError: Bool = false, times: Int? = 1) {
            (self.from, self.to, self.errno, self.entersError, self.times) = (from, to, errno, entersError, times)
        }
    }

    /// The name used in errors (e.g. a fake PCI address or mdev UUID).
    public var name: String
    /// The MIGRATION flags (1, 3, 5 or 7), or nil for a device without migration (probe: ENOTTY).
    public var migration: VFIOMigrationFlags?
    /// The stream format.
    public var payload: Payload
    /// Seed of the device content.
    public var seed: UInt64
    /// Bytes of state dirtied per second while RUNNING or PRE_COPY (mlx5 turns them into incremental
    /// images; every format counts them in a growing MIG_DATA_SIZE estimate).
    public var dirtyBytesPerSecond: UInt64
    /// MIG_DATA_SIZE behaviour.
    public var dataSize: DataSize
    /// Temporary end of data flavour in PRE_COPY states.
    public var preCopyEndOfData: PreCopyEndOfData
    /// Destination load time.
    public var loadCost: LoadCost
    /// Source read time: each read of the save fd spends this much per MiB it returns (a
    /// device's save speed: mlx5 firmware SAVE, a DMA engine), outside the device lock, so
    /// several devices read in parallel. Default zero.
    public var readTimePerMiB: Duration = .zero
    /// Whether the driver has DMA-logging ops (device dirty tracking, features 6–8): a PROBE of
    /// them answers 0, without them every DMA-logging request fails ENOTTY, as the kernel
    /// answers. With them START (ranges, page size), REPORT (read and clear into the caller's
    /// bitmap) and STOP behave as vfio_main.c and the drivers do, and the pages the device writes
    /// by ``SimulatedVFIODevice/dmaWrite(iova:bytes:)`` inside the started ranges are logged.
    /// Default false; ``mtty(name:ports:seed:)`` sets it (mtty registers log ops).
    public var dmaLogging = false
    /// When set, every DMA-logging REPORT that passes the kernel's checks fails with this errno:
    /// Debian's 6.12 answers EOPNOTSUPP (no `CONFIG_IOMMUFD_DRIVER`, the bitmap walker is a stub)
    /// although PROBE and START succeed.
    public var dmaLoggingReportFailure: Errno?
    /// Whether the device's IOMMU tracks dirty pages (`IOMMU_CAP_DIRTY_TRACKING`): an iommufd
    /// `IOMMU_HWPT_ALLOC` with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING` for it succeeds; without it,
    /// EOPNOTSUPP. Default false.
    public var iommuDirtyTracking = false
    /// Whether the kernel offers `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (feature 12, the 2026
    /// uAPI): a SET opts in and PRECOPY_INFO's `flags` become valid output; without it, ENOTTY as
    /// on a 6.12 kernel. Default false.
    public var precopyInfoV2 = false
    /// A REINIT event (mlx5 only): once the initial image has been read, the firmware reports a
    /// new initial chunk of this many bytes (a device reconfigured during pre-copy), queued as a
    /// new image. After the v2 opt-in the PRECOPY_INFO that finds it answers
    /// `VFIO_PRECOPY_INFO_REINIT` with it as initial bytes; without the opt-in it is dirty data.
    /// Default nil.
    public var reinitImageSize: UInt64?
    /// An MSI-X capability with this many vectors (1 to 2048) in the config space
    /// (``pciConfigSpace``). Only the capability is modelled: no table, no interrupts. Default nil.
    public var msixVectors: Int?
    /// Failures armed at start.
    public var failures: [ArcFailure]
    /// How ERROR answers SETs.
    public var errorStyle: ErrorStyle
    /// Model a kernel without the FSM fix: STOP_COPY→PRE_COPY(_P2P) then hangs for `hangTimeout`,
    /// fails ETIMEDOUT, and every later device ioctl times out too (the state mutex is never released).
    public var preFixKernel: Bool
    /// How long a hung request takes to fail in `preFixKernel` mode.
    public var hangTimeout: Duration
    /// A destination keeps the bytes it loaded (`SimulatedVFIODevice.loadedBytes`) up to this size;
    /// beyond it only the digest is kept.
    public var retainedLoadLimit: Int

    public init(
        name: String,
        migration: VFIOMigrationFlags? = [.stopCopy, .p2p, .preCopy],
        payload: Payload,
        seed: UInt64 = 1,
        dirtyBytesPerSecond: UInt64 = 0,
        dataSize: DataSize = .exact,
        preCopyEndOfData: PreCopyEndOfData? = nil,
        loadCost: LoadCost = .none,
        failures: [ArcFailure] = [],
        errorStyle: ErrorStyle = .core,
        preFixKernel: Bool = false,
        hangTimeout: Duration = .seconds(120),
        retainedLoadLimit: Int = 1 << 20
    ) {
        self.name = name
        self.migration = migration
        self.payload = payload
        self.seed = seed
        self.dirtyBytesPerSecond = dirtyBytesPerSecond
        self.dataSize = dataSize
        if let preCopyEndOfData {
            self.preCopyEndOfData = preCopyEndOfData
        } else if case .mlx5 = payload {
            self.preCopyEndOfData = .enomsg
        } else {
            self.preCopyEndOfData = .zero
        }
        self.loadCost = loadCost
        self.failures = failures
        self.errorStyle = errorStyle
        self.preFixKernel = preFixKernel
        self.hangTimeout = hangTimeout
        self.retainedLoadLimit = retainedLoadLimit
    }

    /// An mtty mdev (`mtty-1` or `mtty-2`): flags 7, 0 at the temporary end, state 24 + 36·ports bytes.
    public static func mtty(name: String = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", ports: Int = 2, seed: UInt64 = 1) -> Self {
        var configuration = Self(name: name, payload: .mtty(ports: ports), seed: seed)
        configuration.dmaLogging = true
        return configuration
    }

    /// An mlx5 VF: flags 7, ENOMSG at the temporary end, the record stream, exact MIG_DATA_SIZE.
    public static func mlx5(
        name: String = "0000:3b:00.2", imageSize: UInt64 = 1 << 20, finalImageSize: UInt64 = 64 << 10,
        seed: UInt64 = 1, dirtyBytesPerSecond: UInt64 = 0, loadCost: LoadCost = .none
    ) -> Self {
        Self(
            name: name, payload: .mlx5(MLX5Payload(imageSize: imageSize, finalImageSize: finalImageSize)), seed: seed,
            dirtyBytesPerSecond: dirtyBytesPerSecond, loadCost: loadCost)
    }

    /// A fixed-blob device with the given flags.
    public static func opaque(
        name: String = "0000:5e:00.1", migration: VFIOMigrationFlags = [.stopCopy, .p2p, .preCopy],
        size: UInt64 = 4096, initialBytes: UInt64 = 0, seed: UInt64 = 1
    ) -> Self {
        Self(name: name, migration: migration, payload: .opaque(size: size, initialBytes: initialBytes), seed: seed)
    }

    /// Nil when the simulator can model this configuration, else why not.
    public var validationError: String? {
        if let migration, !migration.isDefinedCombination {
            return "migration flags \(migration) are not one of the defined combinations 1, 3, 5, 7"
        }
        if let vectors = msixVectors, !(1...2048).contains(vectors) { return "MSI-X has 1 to 2048 vectors, not \(vectors)" }
        if let reinit = reinitImageSize {
            guard case .mlx5 = payload else { return "a REINIT event needs the mlx5 payload" }
            guard (1...UInt64(UInt32.max)).contains(reinit) else { return "a REINIT image of \(reinit) bytes (1 to 2^32-1)" }
        }
        switch payload {
        case .mtty(let ports) where !(1...24).contains(ports):
            return "mtty has 1 to 24 ports, not \(ports)"
        case .opaque(let size, let initialBytes) where initialBytes > size:
            return "initial bytes \(initialBytes) exceed the state size \(size)"
        case .mlx5(let payload) where payload.imageSize > UInt64(UInt32.max) || payload.finalImageSize > UInt64(UInt32.max):
            return "mlx5 images are at most 2^32-1 bytes (the firmware LOAD size field)"
        default:
            return nil
        }
    }
}
