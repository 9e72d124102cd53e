import MigrationCore
import VFIO

/// How a vendor module tunes the generic VFIO-PCI handler without copying it: buffer sizes,
/// what to do when the device's pre-copy data runs dry, and what the destination sees of the
/// bytes it writes to the device. Every hook has a default that matches QEMU's VFIO code.
///
/// Threads: the hooks run where the handler's hooks run (the source's migration thread, the
/// destination's load thread), never concurrently for one handler.
public protocol VFIOPCITuning: AnyObject, Sendable {
    /// The module's name, shown in errors and statistics ("vfio-pci", "mlx5").
    var moduleName: String { get }

    /// The size of one read from the save fd, hence of one DATA chunk, given the device's
    /// stop-copy size. Default: min(1 MiB, stop-copy size), as QEMU, but at least 4 KiB.
    func chunkSize(stopCopySize: UInt64) -> Int

    /// Called on the source when a read in PRE_COPY found no data for now. Return fresh
    /// pre-copy sizes if the tuning queried them (mlx5 must, to start its next incremental
    /// save), or nil. Default: nil (QEMU's generic behaviour: the cached sizes go to zero).
    func preCopyDrained(dataFD: VFIOMigrationDataFD) throws -> VFIOPrecopyInfo?

    /// Called on the destination with every byte range written to the resume fd, in order.
    /// Default: nothing.
    func observeResumeData(_ bytes: UnsafeRawBufferPointer) throws

    /// A buffer the destination should receive DATA chunks into instead of its default one
    /// (mlx5 pre-allocates one for the final image). The handler holds the reference while it
    /// uses the buffer, so a tuning may replace it at any time (even from
    /// ``observeResumeData(_:)``) without freeing memory in use. Default: nil.
    var preferredReceiveBuffer: DeviceDataBuffer? { get }

    /// The destination's estimate of the fixed cost (µs) of loading the final data besides
    /// streaming it, reported to the source for its downtime prediction. Default: 0.
    func expectedFinalLoadCostMicros() -> UInt64

    /// What the destination has written to the device and the device has not loaded yet, and
    /// the time loading it is expected to take from now (`MigrationHandler.loadBacklog(context:)`).
    /// Called from the destination's backlog-report thread while the load thread may be in
    /// ``observeResumeData(_:)``: thread-safe, never blocking. Default: `LoadBacklog.none`.
    func loadBacklog() -> LoadBacklog
}

extension VFIOPCITuning {
    public func chunkSize(stopCopySize: UInt64) -> Int {
        Int(max(4096, min(UInt64(VFIOPCIHandler.defaultChunkSize), stopCopySize)))
    }
    public func preCopyDrained(dataFD: VFIOMigrationDataFD) throws -> VFIOPrecopyInfo? { nil }
    public func observeResumeData(_ bytes: UnsafeRawBufferPointer) throws {}
    public var preferredReceiveBuffer: DeviceDataBuffer? { nil }
    public func expectedFinalLoadCostMicros() -> UInt64 { 0 }
    public func loadBacklog() -> LoadBacklog { .none }
}

/// The generic tuning: QEMU's defaults.
public final class GenericVFIOPCITuning: VFIOPCITuning {
    /// What loading the final data costs the device beyond streaming it.
    public let finalLoadCost: Duration

    /// - Parameter finalLoadCost: the device's final load cost, when the VMM knows it (reported
    ///   to the source for its downtime prediction); zero, QEMU's assumption, otherwise.
    public init(finalLoadCost: Duration = .zero) { self.finalLoadCost = max(.zero, finalLoadCost) }
    public var moduleName: String { "vfio-pci" }
    public func expectedFinalLoadCostMicros() -> UInt64 { finalLoadCost.wholeMicroseconds }
}
