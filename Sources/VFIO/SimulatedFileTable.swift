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
}

/// Process-wide map from real fd numbers to the simulated files behind them. An entry lives from the
/// fd's creation until it is closed through the seam.
package final class SimulatedFileTable: Sendable {
    package static let shared = SimulatedFileTable()
    private let files = Mutex<[Int32: any SimulatedFile]>([:])

    /// Creates a real fd (see `VFIOSystem.createSimulatedFD`) served by `file`.
    package func open(_ file: any SimulatedFile) -> Result<Int32, Errno> {
        VFIOSystem.createSimulatedFD().map { fd in
            files.withLock { $0[fd] = file }
            return fd
        }
    }

    package func file(for fd: Int32) -> (any SimulatedFile)? {
        files.withLock { $0[fd] }
    }

    package func unregister(_ fd: Int32) -> (any SimulatedFile)? {
        files.withLock { $0.removeValue(forKey: fd) }
    }

    /// Whether `fd` is a simulated file.
    package func isSimulated(_ fd: Int32) -> Bool { file(for: fd) != nil }
}
