import CSwitchoverLibc
import Synchronization
import SystemPackage
import VFIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The kernel side of a simulated fd: what read/write/ioctl/poll on it do.
package protocol SimulatedFile: AnyObject, Sendable {
    func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno>
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno>
    func write(from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno>
    /// `revents` for `events`; simulated files never block.
    func poll(events: Int16) -> Int16
    /// The answer to pread/pwrite/lseek (ESPIPE for stream files).
    var positionalIOError: Errno { get }
    /// The fd was closed: the file's last reference from userspace is gone.
    func release()
    /// `pread(2)`: `positionalIOError` unless the file has regions (a device fd's config space).
    func pread(into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno>
    /// `pwrite(2)`: `positionalIOError` unless the file has regions.
    func pwrite(from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno>
}

extension SimulatedFile {
    package func pread(into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> { .failure(positionalIOError) }
    package func pwrite(from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> { .failure(positionalIOError) }
}

/// Files without read/write (EINVAL, as the kernel's ioctl-only files answer), never readable
/// in poll, and nothing to do on close unless they say so: every simulated file but devices' data.
package protocol SimulatedControlFile: SimulatedFile {}

extension SimulatedControlFile {
    package func read(into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> { .failure(.invalidArgument) }
    package func write(from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> { .failure(.invalidArgument) }
    package func poll(events: Int16) -> Int16 { 0 }
    package var positionalIOError: Errno { .invalidArgument }
    package func release() {}
}

/// Process-wide map from real fd numbers to the simulated files behind them. An entry lives from the
/// fd's creation until it is closed through the simulated seam (`SimulatedVFIOSyscalls`). Only that
/// seam consults the table: the live seam (`VFIOSystem.live`) knows nothing of it.
package final class SimulatedFileTable: Sendable {
    package static let shared = SimulatedFileTable()

    private struct Entry {
        var file: any SimulatedFile
        /// The hidden other end of a write-only fd's pipe, closed with the fd.
        var companion: Int32?
    }

    private let files = Mutex<[Int32: Entry]>([:])

    /// Creates a real fd (see `createFD(writeOnly:)`) served by `file`: read-only unless `writeOnly`
    /// (the kernel's resume files are O_WRONLY).
    package func open(_ file: any SimulatedFile, writeOnly: Bool = false) -> Result<Int32, Errno> {
        Self.createFD(writeOnly: writeOnly).map { created in
            files.withLock { $0[created.fd] = Entry(file: file, companion: created.companion) }
            return created.fd
        }
    }

    package func file(for fd: Int32) -> (any SimulatedFile)? {
        files.withLock { $0[fd]?.file }
    }

    package func unregister(_ fd: Int32) -> (any SimulatedFile)? {
        guard let entry = files.withLock({ $0.removeValue(forKey: fd) }) else { return nil }
        if let companion = entry.companion { _ = close(companion) }
        return entry.file
    }

    /// Whether `fd` is a simulated file.
    package func isSimulated(_ fd: Int32) -> Bool { file(for: fd) != nil }

    /// Creates the real fd behind a simulated file: the read end of a pipe opened O_CLOEXEC|O_NONBLOCK
    /// whose write end is closed at once. Like the kernel's anon-inode data files it is a stream
    /// (pread/pwrite/lseek fail ESPIPE even without the seam), and a stray raw read returns 0 instead
    /// of blocking. This is the simulated kernel's side, like the anon inode the real kernel creates.
    /// When `writeOnly`, the write end of such a pipe (O_WRONLY like the kernel's resume files: a raw
    /// read fails EBADF, positional I/O ESPIPE); its read end is kept open as the `companion`, so a stray
    /// raw write fills the pipe (then EAGAIN) instead of raising SIGPIPE, and is closed with the fd.
    static func createFD(writeOnly: Bool) -> Result<(fd: Int32, companion: Int32?), Errno> {
        var fds: [Int32] = [-1, -1]
        let rc = fds.withUnsafeMutableBufferPointer { switchover_pipe2($0.baseAddress, O_CLOEXEC | O_NONBLOCK) }
        guard rc == 0 else { return .failure(Errno(rawValue: errno)) }
        if writeOnly { return .success((fds[1], fds[0])) }
        _ = close(fds[1])
        return .success((fds[0], nil))
    }
}
