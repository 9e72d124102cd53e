import Synchronization
import SystemPackage

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

/// Process-wide map from real fd numbers to the simulated files behind them. An entry lives from the
/// fd's creation until it is closed through the seam.
package final class SimulatedFileTable: Sendable {
    package static let shared = SimulatedFileTable()

    private struct Entry {
        var file: any SimulatedFile
        /// The hidden other end of a write-only fd's pipe, closed with the fd.
        var companion: Int32?
    }

    private let files = Mutex<[Int32: Entry]>([:])

    /// Creates a real fd (see `VFIOSystem.createSimulatedFD(writeOnly:)`) served by `file`: read-only
    /// unless `writeOnly` (the kernel's resume files are O_WRONLY).
    package func open(_ file: any SimulatedFile, writeOnly: Bool = false) -> Result<Int32, Errno> {
        VFIOSystem.createSimulatedFD(writeOnly: writeOnly).map { created in
            files.withLock { $0[created.fd] = Entry(file: file, companion: created.companion) }
            return created.fd
        }
    }

    package func file(for fd: Int32) -> (any SimulatedFile)? {
        files.withLock { $0[fd]?.file }
    }

    package func unregister(_ fd: Int32) -> (any SimulatedFile)? {
        guard let entry = files.withLock({ $0.removeValue(forKey: fd) }) else { return nil }
        if let companion = entry.companion { VFIOSystem.closeCompanion(companion) }
        return entry.file
    }

    /// Whether `fd` is a simulated file.
    package func isSimulated(_ fd: Int32) -> Bool { file(for: fd) != nil }
}
