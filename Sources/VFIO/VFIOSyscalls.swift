// The syscall seam: every open/close/ioctl/read/write/pread/pwrite/lseek/poll/readlink/readdir this
// module performs goes through `VFIOSyscalls`. Production code uses `VFIOSystem.live`, which is libc
// and nothing else; tests wrap it (VFIOSyscallRecorder) to record calls and inject errno, and the
// VFIOSimulator product injects its own seam (`SimulatedVFIOSyscalls`) that serves simulated fds and
// passes every other call here.

import CSwitchoverLibc
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

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

/// A seam that passes every call to `base` unless it implements the call itself: what a test or
/// a fuzz target writes to change one answer of the kernel (or the simulator) and keep the rest.
package protocol VFIOForwardingSyscalls: VFIOSyscalls {
    var base: any VFIOSyscalls { get }
}

extension VFIOForwardingSyscalls {
    package func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> { base.open(path, flags) }
    package func close(_ fd: Int32) -> Result<Void, Errno> { base.close(fd) }
    package func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        base.ioctl(fd, request, argument)
    }
    package func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> { base.read(fd, into: buffer) }
    package func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> { base.write(fd, from: buffer) }
    package func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        base.pread(fd, into: buffer, offset: offset)
    }
    package func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        base.pwrite(fd, from: buffer, offset: offset)
    }
    package func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno> { base.lseek(fd, offset, whence) }
    package func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        base.poll(fd, events: events, timeoutMilliseconds: timeoutMilliseconds)
    }
    package func readlink(_ path: String) -> Result<String, Errno> { base.readlink(path) }
    package func listDirectory(_ path: String) -> Result<[String], Errno> { base.listDirectory(path) }
}

extension VFIOSyscalls {
    /// `ioctl(2)`, repeated while it fails with EINTR (nothing was done: the call is restartable).
    package func ioctlRestarting(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        while true {
            let result = ioctl(fd, request, argument)
            if case .failure(.interrupted) = result { continue }
            return result
        }
    }

    /// ``ioctlRestarting(_:_:_:)`` with `bytes` as the argument buffer.
    package func ioctlRestarting(_ fd: Int32, _ request: UInt, bytes: inout [UInt8]) -> Result<Int32, Errno> {
        bytes.withUnsafeMutableBytes { ioctlRestarting(fd, request, .buffer($0)) }
    }

    /// ``ioctlRestarting(_:_:_:)`` with `layout`'s bytes as the argument buffer; after a success
    /// `layout` holds what the kernel wrote back.
    package func ioctlRestarting<Layout: VFIOFixedLayout>(_ fd: Int32, _ request: UInt, layout: inout Layout) -> Result<Int32, Errno> {
        var bytes = layout.bytes
        let result = ioctlRestarting(fd, request, bytes: &bytes)
        if case .success = result, let reply = Layout(bytes: bytes) { layout = reply }
        return result
    }

    /// `open(2)`, repeated while it fails with EINTR.
    package func openRestarting(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
        while true {
            let result = open(path, flags)
            if case .failure(.interrupted) = result { continue }
            return result
        }
    }
}

/// Access to the process's syscall layer.
package enum VFIOSystem {
    /// The real syscalls: libc, with no simulator behind any fd.
    package static let live: any VFIOSyscalls = LiveVFIOSyscalls()

    /// `fcntl(F_GETFD)` and `fcntl(F_GETFL)` of a real fd: whether it is close-on-exec and its access mode.
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

    package init(closeOnExec: Bool, access: Access) { (self.closeOnExec, self.access) = (closeOnExec, access) }

    package var description: String {
        let mode =
            switch access {
            case .readOnly: "O_RDONLY"
            case .writeOnly: "O_WRONLY"
            case .readWrite: "O_RDWR"
            }
        return closeOnExec ? mode + "|O_CLOEXEC" : mode
    }
}

private func currentErrno() -> Int32 {
    errno
}

/// Direct libc calls.
struct LiveVFIOSyscalls: VFIOSyscalls {
    private func check<T: BinaryInteger>(_ rc: T) -> Result<T, Errno> {
        rc < 0 ? .failure(Errno(rawValue: currentErrno())) : .success(rc)
    }

    func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
        check(path.withCString { systemOpen($0, flags) })
    }

    func close(_ fd: Int32) -> Result<Void, Errno> {
        check(systemClose(fd)).map { _ in () }
    }

    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        switch argument {
        case .none: return check(systemIoctl(fd, request, 0 as UInt))
        case .value(let value): return check(systemIoctl(fd, request, value))
        case .buffer(let buffer):
            guard let base = buffer.baseAddress else { return .failure(.badAddress) }
            return check(systemIoctl(fd, request, base))
        }
    }

    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        return check(systemRead(fd, buffer.baseAddress, buffer.count))
    }

    func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        return check(systemWrite(fd, buffer.baseAddress, buffer.count))
    }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        return check(systemPread(fd, buffer.baseAddress, buffer.count, off_t(offset)))
    }

    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        return check(systemPwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)))
    }

    func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno> {
        return check(systemLseek(fd, off_t(offset), whence)).map { Int64($0) }
    }

    func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
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
// ioctl is variadic, which Swift cannot call: the C shim passes the one argument as an integer.
private func systemIoctl(_ fd: Int32, _ request: UInt, _ argument: UInt) -> Int32 {
    switchover_ioctl(fd, request, argument)
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
