import SystemPackage
import VFIO

/// The simulator's syscall seam: calls on fds registered in `SimulatedFileTable` are served by their
/// simulated file; every other call (and `open`, `readlink`, `listDirectory`) goes to `base`, by
/// default the live seam. Simulated devices and `SimulatedVFIOHost` make their calls through it, so
/// simulated fds are real fds (fd numbers, O_CLOEXEC, close) with the simulator's read/write/ioctl
/// semantics, while the live seam carries no simulator code.
package struct SimulatedVFIOSyscalls: VFIOSyscalls {
    private let base: any VFIOSyscalls
    private let table: SimulatedFileTable

    /// A seam over `base` (the live seam unless given) serving the fds of `table`.
    package init(base: any VFIOSyscalls = VFIOSystem.live, table: SimulatedFileTable = .shared) { (self.base, self.table) = (base, table) }

    package func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> { base.open(path, flags) }

    package func close(_ fd: Int32) -> Result<Void, Errno> {
        // Unregister before closing so a concurrently reused fd number is never routed to this file.
        if let file = table.unregister(fd) { file.release() }
        return base.close(fd)
    }

    package func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        if let file = table.file(for: fd) { return file.ioctl(request, argument) }
        return base.ioctl(fd, request, argument)
    }

    package func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        if let file = table.file(for: fd) { return file.read(into: buffer) }
        return base.read(fd, into: buffer)
    }

    package func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        if let file = table.file(for: fd) { return file.write(from: buffer) }
        return base.write(fd, from: buffer)
    }

    package func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        if let file = table.file(for: fd) { return file.pread(into: buffer, offset: offset) }
        return base.pread(fd, into: buffer, offset: offset)
    }

    package func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        if let file = table.file(for: fd) { return file.pwrite(from: buffer, offset: offset) }
        return base.pwrite(fd, from: buffer, offset: offset)
    }

    package func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno> {
        if let file = table.file(for: fd) { return .failure(file.positionalIOError) }
        return base.lseek(fd, offset, whence)
    }

    package func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        if let file = table.file(for: fd) { return .success(file.poll(events: events)) }
        return base.poll(fd, events: events, timeoutMilliseconds: timeoutMilliseconds)
    }

    package func readlink(_ path: String) -> Result<String, Errno> { base.readlink(path) }

    package func listDirectory(_ path: String) -> Result<[String], Errno> { base.listDirectory(path) }
}

extension VFIOSystem {
    /// The live seam with the process's simulated fds served by the simulator.
    package static let simulated: any VFIOSyscalls = SimulatedVFIOSyscalls()
}
