import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import VFIO
import VFIOPCIHandler

/// The mlx5_vfio_pci tuning of the generic VFIO-PCI handler.
///
/// - Reads in chunks of up to 8 MiB, the driver's chunk-mode size (`MAX_CHUNK_SIZE`).
/// - When a pre-copy read finds no data, asks for precopy info: on mlx5 that ioctl is what
///   starts the next incremental save, so polling it drives progress.
/// - On the destination, follows the record stream as it passes to the device: refuses what
///   the driver would refuse (oversized records, unknown mandatory tags) before it reaches the
///   kernel, and when the STOP_COPY_SIZE record arrives — during pre-copy, while the VM still
///   runs — allocates and faults in the buffer that will receive the final image, so that
///   allocation is not paid during the downtime.
public final class MLX5Tuning: VFIOPCITuning, Sendable {
    /// The driver's chunk-mode size.
    public static let maxChunkSize = 8 << 20
    /// The largest final-image buffer pre-allocated, whatever the source announces.
    public static let defaultMaxPreallocation = 64 << 20

    public let maxPreallocation: Int
    /// What the tuning learns from the resume data, guarded as one.
    private struct State {
        var parser: MLX5RecordParser
        /// Replaced (never freed in place) when a larger STOP_COPY_SIZE arrives: a handler that is
        /// receiving into the old one holds its reference until it is done with it.
        var finalImageBuffer: DeviceDataBuffer?
        /// The image the device is loading now (the write that completed its record has not
        /// returned yet, as far as this tuning saw): its expected cost and when its load began.
        var loadingImage: (bytes: UInt64, cost: Duration, since: Duration)?
    }
    private let state: Mutex<State>

    /// What loading the final image costs the device beyond streaming it (the last
    /// LOAD_VHCA_STATE), reported to the source for its downtime prediction.
    public let finalLoadCost: Duration
    /// What loading the first (initial) image costs the device: LOAD_VHCA_STATE allocates the
    /// firmware's resources then. Reported as the destination's backlog while that image
    /// arrives and loads; each later image costs ``finalLoadCost``.
    public let initialLoadCost: Duration
    private let clock = MonotonicClock()

    /// - Parameters:
    ///   - recordLimit: the largest record accepted (the driver's is 2^32-1).
    ///   - maxPreallocation: the bound on the pre-allocated final-image buffer.
    ///   - finalLoadCost: the final image's load cost, measured on the hardware; zero (QEMU's
    ///     assumption) when unknown. No measurement can tell it before the final image arrives.
    ///   - initialLoadCost: the first image's load cost, measured on the hardware; zero when
    ///     unknown (the destination then reports no backlog for it).
    public init(
        recordLimit: UInt64 = MLX5RecordParser.defaultRecordLimit, maxPreallocation: Int = MLX5Tuning.defaultMaxPreallocation,
        finalLoadCost: Duration = .zero, initialLoadCost: Duration = .zero
    ) {
        self.state = Mutex(State(parser: MLX5RecordParser(recordLimit: recordLimit)))
        self.maxPreallocation = max(4096, maxPreallocation)
        self.finalLoadCost = max(.zero, finalLoadCost)
        self.initialLoadCost = max(.zero, initialLoadCost)
    }

    public func expectedFinalLoadCostMicros() -> UInt64 { finalLoadCost.wholeMicroseconds }

    /// The cost of loading image number `n` (1 = the initial image).
    private func imageCost(_ n: Int) -> Duration { n <= 1 ? initialLoadCost : finalLoadCost }

    /// The firmware-data record still arriving (the device loads it once it is whole) and the
    /// image being loaded now, with what remains of its expected cost.
    public func loadBacklog() -> LoadBacklog {
        state.withLock { s in
            var bytes: UInt64 = 0
            var cost = Duration.zero
            if let (header, received) = s.parser.openRecord, header.tag == .firmwareData {
                bytes = received
                cost = imageCost(s.parser.recordCount[MLX5RecordTag.firmwareData.rawValue, default: 0] + 1)
            }
            if let loading = s.loadingImage {
                bytes = [bytes, loading.bytes].saturatingSum
                cost += max(.zero, loading.cost - (clock.now - loading.since))
            }
            return LoadBacklog(bytes: bytes, expectedMicros: cost.wholeMicroseconds)
        }
    }

    public var moduleName: String { "mlx5" }

    public func chunkSize(stopCopySize: UInt64) -> Int {
        Int(max(4096, min(UInt64(Self.maxChunkSize), stopCopySize)))
    }

    public func preCopyDrained(dataFD: VFIOMigrationDataFD) throws -> VFIOPrecopyInfo? {
        try dataFD.precopyInfo()
    }

    public func observeResumeData(_ bytes: UnsafeRawBufferPointer) throws {
        try state.withLock { s in
            // The handler writes each range after observing it: a new range means the write
            // that completed the last image has returned.
            s.loadingImage = nil
            var size = s.parser.openRecord?.header.payloadSize ?? 0
            for event in try s.parser.consume(bytes) {
                switch event {
                case .header(let header, _): size = header.payloadSize
                case .stopCopySize(let announced): preallocate(announced, in: &s)
                case .recordEnd(.firmwareData, _):
                    let n = s.parser.recordCount[MLX5RecordTag.firmwareData.rawValue, default: 0]
                    s.loadingImage = (size, imageCost(n), clock.now)
                default: break
                }
            }
        }
    }

    /// The size the source announced for its final image (0 until STOP_COPY_SIZE arrives).
    public var announcedStopCopySize: UInt64 { state.withLock { $0.parser.announcedStopCopySize } }

    /// The bytes pre-allocated for the final image (0 until STOP_COPY_SIZE arrives).
    public var preallocatedBytes: Int { state.withLock { $0.finalImageBuffer?.count ?? 0 } }

    public var preferredReceiveBuffer: DeviceDataBuffer? { state.withLock { $0.finalImageBuffer } }

    private func preallocate(_ announced: UInt64, in s: inout State) {
        let size = Int(min(UInt64(maxPreallocation), max(announced, 4096)))
        if let existing = s.finalImageBuffer, existing.count >= size { return }
        // Every page is touched now, so the page faults happen before the switchover.
        s.finalImageBuffer = DeviceDataBuffer(byteCount: size, prefault: true)
    }
}
