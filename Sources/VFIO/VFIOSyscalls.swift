// The syscall seam: every open/close/ioctl/read/write/pread/pwrite/lseek/poll/readlink/readdir this
// module performs goes through `VFIOSyscalls`. Production code uses `VFIOSystem.live`; tests wrap it
// (VFIOSyscallRecorder) to record calls and inject errno, or replace `open` to fake /dev/vfio.
// Calls on fds registered as simulated files are routed to the simulator here, so simulated data fds
// are real fds (fd numbers, O_CLOEXEC, close) with the simulator's read/write/ioctl semantics.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage

/// The argument of an `ioctl(2)`: none, an integer passed by value, or a buffer passed by pointer.
package enum VFIOIoctlArgument {
    case none
    case value(UInt)
    case buffer(UnsafeMutableRawBufferPointer)
}

/// The syscalls this module makes. Results are raw (no EINTR retry): retry policy belongs to callers,
/// so a trace shows every attempt.
package protocol VFIOSyscalls: Sendable {
    /// `open(2)` with `flags` (callers add O_CLOEXEC).
    func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno>
    /// `close(2)`.
    func close(_ fd: Int32) -> Result<Void, Errno>
    /// `ioctl(2)`; returns the ioctl's non-negative result.
    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno>
    /// `read(2)`.
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno>
    /// `write(2)`.
    func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno>
    /// `pread(2)`.
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno>
    /// `pwrite(2)`.
    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno>
    /// `lseek(2)`.
    func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno>
    /// `poll(2)` on one fd; returns `revents` (0 on timeout).
    func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno>
    /// `readlink(2)`.
    func readlink(_ path: String) -> Result<String, Errno>
    /// `opendir(3)`/`readdir(3)`: the entry names of a directory, without "." and "..", sorted.
    func listDirectory(_ path: String) -> Result<[String], Errno>
}

/// Access to the process's syscall layer.
package enum VFIOSystem {
    /// The real syscalls, with simulated fds routed to their simulator.
    package static let live: any VFIOSyscalls = LiveVFIOSyscalls()

    /// Creates the real fd behind a simulated file: the read end of a pipe opened O_CLOEXEC|O_NONBLOCK
    /// whose write end is closed at once. Like the kernel's anon-inode data files it is a stream
    /// (pread/pwrite/lseek fail ESPIPE even without the seam), and a stray raw read returns 0 instead
    /// of blocking. This is the simulated kernel's side, like the anon inode the real kernel creates.
    package static func createSimulatedFD() -> Result<Int32, Errno> {
        createSimulatedFD(writeOnly: false).map(\.fd)
    }

    /// As `createSimulatedFD()`, or, when `writeOnly`, the write end of such a pipe (O_WRONLY like the
    /// kernel's resume files: a raw read fails EBADF, positional I/O ESPIPE). The read end of a write-only
    /// fd is kept open as its `companion`, so a stray raw write fills the pipe (then EAGAIN) instead of
    /// raising SIGPIPE; the caller closes the companion with the fd.
    package static func createSimulatedFD(writeOnly: Bool) -> Result<(fd: Int32, companion: Int32?), Errno> {
        var fds: [Int32] = [-1, -1]
        if let pipe2 = LibcSymbols.pipe2 {
            guard fds.withUnsafeMutableBufferPointer({ pipe2($0.baseAddress, Int32(O_CLOEXEC) | Int32(O_NONBLOCK)) }) == 0 else {
                return .failure(Errno(rawValue: currentErrno()))
            }
        } else {
            guard pipe(&fds) == 0 else { return .failure(Errno(rawValue: currentErrno())) }
            for fd in fds {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(fd, F_SETFL, O_NONBLOCK)
            }
        }
        if writeOnly { return .success((fds[1], fds[0])) }
        _ = systemClose(fds[1])
        return .success((fds[0], nil))
    }

    /// Closes a simulated fd's companion (see `createSimulatedFD(writeOnly:)`).
    package static func closeCompanion(_ fd: Int32) {
        _ = systemClose(fd)
    }

    /// `fcntl(F_GETFD)` and `fcntl(F_GETFL)` of a real fd: whether it is close-on-exec and its access mode.
    /// Simulated fds are real fds, so this answers for them too.
    package static func descriptorFlags(_ fd: Int32) -> Result<VFIODescriptorFlags, Errno> {
        let descriptor = fcntl(fd, F_GETFD)
        guard descriptor >= 0 else { return .failure(Errno(rawValue: currentErrno())) }
        let status = fcntl(fd, F_GETFL)
        guard status >= 0 else { return .failure(Errno(rawValue: currentErrno())) }
        let access: VFIODescriptorFlags.Access =
            switch status & O_ACCMODE {
            case O_RDONLY: .readOnly
            case O_WRONLY: .writeOnly
            default: .readWrite
            }
        return .success(VFIODescriptorFlags(closeOnExec: descriptor & FD_CLOEXEC != 0, access: access))
    }
}

/// What `fcntl` says about an fd: close-on-exec and the access mode it was opened with.
package struct VFIODescriptorFlags: Sendable, Equatable, CustomStringConvertible {
    package enum Access: Sendable, Equatable {
        case readOnly, writeOnly, readWrite
    }

    package var closeOnExec: Bool
    package var access: Access

    package init(closeOnExec: Bool, access: Access) {
        self.closeOnExec = closeOnExec
        self.access = access
    }

    package var description: String {
        let mode = switch access {
        case .readOnly: "O_RDONLY"
        case .writeOnly: "O_WRONLY"
        case .readWrite: "O_RDWR"
        }
        return closeOnExec ? mode + "|O_CLOEXEC" : mode
    }
}

/// libc functions Swift cannot import directly: `ioctl` is variadic and `pipe2` needs _GNU_SOURCE.
/// They are looked up once and called through a fixed prototype; for `ioctl` that prototype matches
/// the calling convention of its variadic definition for one integer or pointer argument on Linux.
private enum LibcSymbols {
    typealias IoctlFunction = @convention(c) (Int32, UInt, UInt) -> Int32
    typealias Pipe2Function = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32

    static let ioctl: IoctlFunction? = symbol("ioctl", as: IoctlFunction.self)
    static let pipe2: Pipe2Function? = symbol("pipe2", as: Pipe2Function.self)

    private static func symbol<F>(_ name: String, as type: F.Type) -> F? {
        guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, name) else { return nil }
        return unsafeBitCast(address, to: type)
    }
}

private func currentErrno() -> Int32 {
    errno
}

/// Direct libc calls, except that fds registered in `SimulatedFileTable` are served by their simulator.
struct LiveVFIOSyscalls: VFIOSyscalls {
    private func check<T: BinaryInteger>(_ rc: T) -> Result<T, Errno> {
        rc < 0 ? .failure(Errno(rawValue: currentErrno())) : .success(rc)
    }

    func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
        check(path.withCString { systemOpen($0, flags) })
    }

    func close(_ fd: Int32) -> Result<Void, Errno> {
        // Unregister before closing so a concurrently reused fd number is never routed to this file.
        if let file = SimulatedFileTable.shared.unregister(fd) { file.release() }
        return check(systemClose(fd)).map { _ in () }
    }

    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return file.ioctl(request, argument) }
        switch argument {
        case .none: return check(systemIoctl(fd, request, 0 as UInt))
        case .value(let value): return check(systemIoctl(fd, request, value))
        case .buffer(let buffer):
            guard let base = buffer.baseAddress else { return .failure(.badAddress) }
            return check(systemIoctl(fd, request, base))
        }
    }

    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return file.read(into: buffer) }
        return check(systemRead(fd, buffer.baseAddress, buffer.count))
    }

    func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return file.write(from: buffer) }
        return check(systemWrite(fd, buffer.baseAddress, buffer.count))
    }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return file.pread(into: buffer, offset: offset) }
        return check(systemPread(fd, buffer.baseAddress, buffer.count, off_t(offset)))
    }

    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return file.pwrite(from: buffer, offset: offset) }
        return check(systemPwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)))
    }

    func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return .failure(file.positionalIOError) }
        return check(systemLseek(fd, off_t(offset), whence)).map { Int64($0) }
    }

    func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        if let file = SimulatedFileTable.shared.file(for: fd) { return .success(file.poll(events: events)) }
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        return check(systemPoll(&pfd, 1, timeoutMilliseconds)).map { $0 == 0 ? 0 : pfd.revents }
    }

    func readlink(_ path: String) -> Result<String, Errno> {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = buffer.withUnsafeMutableBufferPointer { out -> Int in
            guard let base = out.baseAddress else { return -1 }
            return path.withCString { systemReadlink($0, base, out.count - 1) }
        }
        guard count >= 0 else { return .failure(Errno(rawValue: currentErrno())) }
        let bytes = buffer[0..<count].map { UInt8(bitPattern: $0) }
        return .success(String(decoding: bytes, as: UTF8.self))
    }

    func listDirectory(_ path: String) -> Result<[String], Errno> {
        guard let dir = path.withCString({ opendir($0) }) else { return .failure(Errno(rawValue: currentErrno())) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) {
                    String(cString: $0)
                }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return .success(names.sorted())
    }
}

// The libc entry points, named apart from the protocol's methods.
private func systemOpen(_ path: UnsafePointer<CChar>, _ flags: Int32) -> Int32 { open(path, flags) }
private func systemClose(_ fd: Int32) -> Int32 { close(fd) }
private func systemIoctl(_ fd: Int32, _ request: UInt, _ argument: UInt) -> Int32 {
    guard let ioctl = LibcSymbols.ioctl else {
        errno = ENOSYS
        return -1
    }
    return ioctl(fd, request, argument)
}
private func systemIoctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer) -> Int32 {
    systemIoctl(fd, request, UInt(bitPattern: argument))
}
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int { read(fd, buffer, count) }
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int { write(fd, buffer, count) }
private func systemPread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: off_t) -> Int {
    pread(fd, buffer, count, offset)
}
private func systemPwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ offset: off_t) -> Int {
    pwrite(fd, buffer, count, offset)
}
private func systemLseek(_ fd: Int32, _ offset: off_t, _ whence: Int32) -> off_t { lseek(fd, offset, whence) }
private func systemPoll(_ fds: UnsafeMutablePointer<pollfd>, _ count: nfds_t, _ timeout: Int32) -> Int32 {
    poll(fds, count, timeout)
}
private func systemReadlink(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutablePointer<CChar>, _ size: Int) -> Int {
    readlink(path, buffer, size)
}
