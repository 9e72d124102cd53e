import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The last migration state a device client saw, shared with its data fds so a 0-byte read can be
/// told apart: temporary end in PRE_COPY states, final end in STOP_COPY.
final class VFIODeviceStateCache: Sendable {
    private let state = Mutex<VFIODeviceState?>(nil)
    var value: VFIODeviceState? {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}

/// A migration data fd returned by `VFIOMigrationDevice.setState(_:)`: the save fd (read) or the
/// resume fd (write) of one migration session. It is a stream: positional I/O fails with ESPIPE.
///
/// Calls on one data fd are serialized. The fd is closed by `close()` or when the object goes away.
public final class VFIOMigrationDataFD: Sendable {
    /// Save (read) or resume (write).
    public let direction: VFIODataDirection
    /// The device this session belongs to, for errors.
    public let deviceName: String

    let system: any VFIOSyscalls
    let stateCache: VFIODeviceStateCache
    private let descriptor: Mutex<Int32?>

    /// Consecutive EAGAIN answers tolerated after poll reported the fd ready.
    private static let maxConsecutiveAgain = 64

    init(fd: Int32, direction: VFIODataDirection, deviceName: String, system: any VFIOSyscalls, stateCache: VFIODeviceStateCache) {
        (self.direction, self.deviceName, self.system, self.stateCache) = (direction, deviceName, system, stateCache)
        self.descriptor = Mutex(fd)
    }

    deinit {
        let fd = descriptor.withLock { $0 }
        if let fd { _ = system.close(fd) }
    }

    /// The underlying fd, or nil once closed.
    public var fileDescriptor: FileDescriptor? {
        descriptor.withLock { $0.map { FileDescriptor(rawValue: $0) } }
    }

    /// Whether `close()` was called.
    public var isClosed: Bool { descriptor.withLock { $0 == nil } }

    private func withFD<T>(_ operation: VFIOOperation, _ body: (Int32) throws(VFIOError) -> T) throws(VFIOError) -> T {
        try descriptor.withLock { (fd: inout Int32?) throws(VFIOError) -> T in
            guard let fd else { throw VFIOError.dataFDClosed(operation: operation, device: deviceName) }
            return try body(fd)
        }
    }

    private func waitUntilReady(_ fd: Int32, events: Int16, operation: VFIOOperation) throws(VFIOError) {
        while true {
            switch system.poll(fd, events: events, timeoutMilliseconds: -1) {
            case .success: return
            case .failure(.interrupted): continue
            case .failure(let errno): throw VFIOError.syscallFailed(operation: operation, device: deviceName, errno: errno)
            }
        }
    }

    /// Reads up to `buffer.count` bytes of device state into `buffer` (`read(2)`), retrying EINTR,
    /// and waiting with `poll(2)` on EAGAIN. ENOMSG, and 0 in a PRE_COPY state, mean `.drainedForNow`;
    /// 0 in STOP_COPY means `.endOfStream`.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(VFIOError) -> VFIODataReadResult {
        try withFD(.read) { (fd) throws(VFIOError) -> VFIODataReadResult in
            switch try transfer(fd, .read, events: Int16(POLLIN), { system.read(fd, into: buffer) }) {
            case .success(let count) where count > 0:
                return .bytes(count)
            case .success:
                if buffer.isEmpty { return .bytes(0) }
                return stateCache.value?.isPreCopy == true ? .drainedForNow : .endOfStream
            case .failure(.noMessage):
                return .drainedForNow
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .read, device: deviceName, errno: errno)
            }
        }
    }

    /// Writes all of `buffer` (`write(2)`), continuing after partial writes, retrying EINTR and
    /// waiting with `poll(2)` on EAGAIN.
    public func write(_ buffer: UnsafeRawBufferPointer) throws(VFIOError) {
        try withFD(.write) { (fd) throws(VFIOError) in
            var offset = 0
            while offset < buffer.count {
                let rest = UnsafeRawBufferPointer(rebasing: buffer[offset...])
                switch try transfer(fd, .write, events: Int16(POLLOUT), { system.write(fd, from: rest) }) {
                case .success(let count) where count > 0:
                    offset += count
                case .success:
                    throw VFIOError.unexpectedReply(operation: .write, device: deviceName, detail: "write returned 0")
                case .failure(let errno):
                    throw VFIOError.syscallFailed(operation: .write, device: deviceName, errno: errno)
                }
            }
        }
    }

    /// One `read(2)` or `write(2)` by `call`, repeated on EINTR, and on EAGAIN once `poll(2)` reports
    /// the fd ready for `events` (at most `maxConsecutiveAgain` times in a row). Returns the first other
    /// answer, or EAGAIN when the fd keeps answering it.
    private func transfer(
        _ fd: Int32, _ operation: VFIOOperation, events: Int16, _ call: () -> Result<Int, Errno>
    ) throws(VFIOError) -> Result<Int, Errno> {
        var again = 0
        while true {
            switch call() {
            case .failure(.interrupted):
                continue
            case .failure(.resourceTemporarilyUnavailable) where again < Self.maxConsecutiveAgain:
                again += 1
                try waitUntilReady(fd, events: events, operation: operation)
            case let result:
                return result
            }
        }
    }

    /// Writes all of `bytes`; see `write(_:)`.
    public func write(_ bytes: [UInt8]) throws(VFIOError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(VFIOError) in try write(buffer) }
        }
        try result.get()
    }

    /// The pre-copy estimates (`VFIO_MIG_GET_PRECOPY_INFO` on this fd). `flags` is zeroed going in, so
    /// a v1 driver's echo is 0 and bit 0 of the answer is `VFIO_PRECOPY_INFO_REINIT` only from a driver
    /// that was told to report it (``VFIOMigrationDevice/enablePrecopyInfoV2()``). Outside PRE_COPY states the kernel answers EINVAL:
    /// `VFIOError.notInPreCopy`; ENOTTY: `VFIOError.featureUnsupported`.
    public func precopyInfo() throws(VFIOError) -> VFIOPrecopyInfo {
        try withFD(.precopyInfo) { (fd) throws(VFIOError) -> VFIOPrecopyInfo in
            var info = VFIOPrecopyInfoLayout(argsz: UInt32(VFIOPrecopyInfoLayout.size), flags: 0)
            switch system.ioctlRestarting(fd, VFIOUAPI.migGetPrecopyInfo, layout: &info) {
            case .success:
                return VFIOPrecopyInfo(
                    initialBytes: info.initialBytes, dirtyBytes: info.dirtyBytes, reinit: info.flags & VFIOUAPI.precopyInfoReinit != 0)
            case .failure(.invalidArgument):
                throw VFIOError.notInPreCopy(device: deviceName)
            case .failure(.inappropriateIOCTLForDevice):
                throw VFIOError.featureUnsupported(operation: .precopyInfo, device: deviceName, errno: .inappropriateIOCTLForDevice)
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .precopyInfo, device: deviceName, errno: errno)
            }
        }
    }

    /// Closes the fd (`close(2)`). The device's state is not affected. Closing twice is a no-op.
    public func close() throws(VFIOError) {
        let fd = descriptor.withLock { fd -> Int32? in
            defer { fd = nil }
            return fd
        }
        guard let fd else { return }
        // close(2) releases the fd even when it reports EINTR; never retry it.
        if case .failure(let errno) = system.close(fd), errno != .interrupted {
            throw VFIOError.syscallFailed(operation: .close, device: deviceName, errno: errno)
        }
    }
}
