/// A VFIO device that speaks the migration uAPI v2: kernel-backed (`KernelVFIODevice`) or
/// simulated (`SimulatedVFIODevice`). Handlers are written against this protocol only.
///
/// Calls are thread-safe: a migration thread may drive the device while another thread queries it.
public protocol VFIOMigrationDevice: AnyObject, Sendable {
    /// The device's name for errors and logs: a PCI address (`0000:3b:00.2`), an mdev UUID, or a
    /// simulated device's name.
    var name: String { get }

    /// The migration flags, or nil when the device offers no migration (the probe answered ENOTTY
    /// or EINVAL). Throws when the probe fails otherwise. Wraps `VFIO_DEVICE_FEATURE` GET `MIGRATION`.
    func migrationFlags() throws(VFIOError) -> VFIOMigrationFlags?

    /// The current migration state. Wraps `VFIO_DEVICE_FEATURE` GET `MIG_DEVICE_STATE`.
    func deviceState() throws(VFIOError) -> VFIODeviceState

    /// Moves the device to `state` and returns the new data fd when the final arc opens a session
    /// (save fd for STOP_COPY from STOP, PRE_COPY, PRE_COPY_P2P; resume fd for RESUMING).
    /// Wraps `VFIO_DEVICE_FEATURE` SET `MIG_DEVICE_STATE`.
    ///
    /// The request is validated first: ERROR, states the device's flags lack, and STOP_COPY→PRE_COPY(_P2P)
    /// (a kernel hang) are refused without a syscall. After a failed SET the real state is read back
    /// and reported in `VFIOError.setStateFailed`, because the kernel echoes the requested one.
    @discardableResult
    func setState(_ state: VFIODeviceState) throws(VFIOError) -> VFIOMigrationDataFD?

    /// The estimated bytes still needed to complete STOP_COPY.
    /// Wraps `VFIO_DEVICE_FEATURE` GET `MIG_DATA_SIZE`.
    func stopCopySize() throws(VFIOError) -> UInt64

    /// Resets the device: state back to RUNNING, every open data fd disabled (ENODEV).
    /// Wraps `VFIO_DEVICE_RESET`.
    func reset() throws(VFIOError)

    /// Opts in to `VFIO_MIG_GET_PRECOPY_INFO` v2 (`VFIO_DEVICE_FEATURE` SET
    /// `MIG_PRECOPY_INFOv2`, no payload): afterwards the driver may report
    /// ``VFIOPrecopyInfo/reinit``. False when the kernel or driver does not offer it (ENOTTY,
    /// EINVAL). Default: false (a device that cannot say).
    func enablePrecopyInfoV2() throws(VFIOError) -> Bool
}

extension VFIOMigrationDevice {
    public func enablePrecopyInfoV2() throws(VFIOError) -> Bool { false }
}

/// `VFIO_MIG_GET_PRECOPY_INFO`'s answer.
public struct VFIOPrecopyInfo: Sendable, Equatable, CustomStringConvertible {
    /// Initial (mandatory pre-copy) bytes not yet read; only shrinks.
    public var initialBytes: UInt64
    /// Bytes of state changed since it was last read; may grow or shrink.
    public var dirtyBytes: UInt64
    /// `VFIO_PRECOPY_INFO_REINIT` (flags bit 0, only after ``VFIOMigrationDevice/enablePrecopyInfoV2()``):
    /// new initial data is on the stream; `initialBytes` restarts from a new value and
    /// `dirtyBytes` counts from it.
    public var reinit: Bool

    public init(initialBytes: UInt64, dirtyBytes: UInt64, reinit: Bool = false) {
        (self.initialBytes, self.dirtyBytes, self.reinit) = (initialBytes, dirtyBytes, reinit)
    }

    public var description: String { "initial \(initialBytes) B, dirty \(dirtyBytes) B\(reinit ? ", REINIT" : "")" }
}

/// What one `read(2)` of a migration data fd produced.
public enum VFIODataReadResult: Sendable, Equatable {
    /// This many bytes (> 0) were read into the buffer.
    case bytes(Int)
    /// PRE_COPY or PRE_COPY_P2P: no data for now (ENOMSG, or 0 from hisi/qat/mtty); more may come.
    case drainedForNow
    /// STOP_COPY: the stream is complete (read returned 0).
    case endOfStream
}

/// Which way a migration data fd carries state.
public enum VFIODataDirection: Sendable, Equatable {
    /// A save fd (O_RDONLY): PRE_COPY, PRE_COPY_P2P, STOP_COPY.
    case save
    /// A resume fd (O_WRONLY): RESUMING.
    case resume
}
