import Foundation
import MigrationCore
import VFIOPCIHandler
import VFIO

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
public final class MLX5Tuning: VFIOPCITuning, @unchecked Sendable {
    /// The driver's chunk-mode size.
    public static let maxChunkSize = 8 << 20
    /// The largest final-image buffer pre-allocated, whatever the source announces.
    public static let defaultMaxPreallocation = 64 << 20

    public let maxPreallocation: Int
    private let lock = NSLock()
    private var parser: MLX5RecordParser
    /// Replaced (never freed in place) when a larger STOP_COPY_SIZE arrives: a handler that is
    /// receiving into the old one holds its reference until it is done with it.
    private var finalImageBuffer: DeviceDataBuffer?

    /// What loading the final image costs the device beyond streaming it (the last
    /// LOAD_VHCA_STATE), reported to the source for its downtime prediction.
    public let finalLoadCost: Duration

    /// - Parameters:
    ///   - recordLimit: the largest record accepted (the driver's is 2^32-1).
    ///   - maxPreallocation: the bound on the pre-allocated final-image buffer.
    ///   - finalLoadCost: the final image's load cost, measured on the hardware; zero (QEMU's
    ///     assumption) when unknown. No measurement can tell it before the final image arrives.
    public init(recordLimit: UInt64 = MLX5RecordParser.defaultRecordLimit, maxPreallocation: Int = MLX5Tuning.defaultMaxPreallocation,
                finalLoadCost: Duration = .zero) {
        self.parser = MLX5RecordParser(recordLimit: recordLimit)
        self.maxPreallocation = max(4096, maxPreallocation)
        self.finalLoadCost = max(.zero, finalLoadCost)
    }

    public func expectedFinalLoadCostMicros() -> UInt64 { finalLoadCost.wholeMicroseconds }

    public var moduleName: String { "mlx5" }

    public func chunkSize(stopCopySize: UInt64) -> Int {
        Int(max(4096, min(UInt64(Self.maxChunkSize), stopCopySize)))
    }

    public func preCopyDrained(dataFD: VFIOMigrationDataFD) throws -> VFIOPrecopyInfo? {
        try dataFD.precopyInfo()
    }

    public func observeResumeData(_ bytes: UnsafeRawBufferPointer) throws {
        try lock.withLock {
            for event in try parser.consume(bytes) {
                if case .stopCopySize(let size) = event { preallocate(size) }
            }
        }
    }

    /// The size the source announced for its final image (0 until STOP_COPY_SIZE arrives).
    public var announcedStopCopySize: UInt64 { lock.withLock { parser.announcedStopCopySize } }

    /// The bytes pre-allocated for the final image (0 until STOP_COPY_SIZE arrives).
    public var preallocatedBytes: Int { lock.withLock { finalImageBuffer?.count ?? 0 } }

    public var preferredReceiveBuffer: DeviceDataBuffer? { lock.withLock { finalImageBuffer } }

    private func preallocate(_ announced: UInt64) {
        let size = Int(min(UInt64(maxPreallocation), max(announced, 4096)))
        if let existing = finalImageBuffer, existing.count >= size { return }
        // Every page is touched now, so the page faults happen before the switchover.
        finalImageBuffer = DeviceDataBuffer(byteCount: size, prefault: true)
    }
}
