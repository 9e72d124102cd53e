#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A read or write on a file descriptor failed.
public struct ByteIOError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call that failed ("read", "write", "open").
    public var operation: String
    /// `errno` after the call, raw: MigrationStream depends on nothing. MigrationCore's
    /// `errno` property gives it as swift-system's `Errno`.
    public var code: Int32

    public init(operation: String, code: Int32) { (self.operation, self.code) = (operation, code) }

    public var description: String {
        "\(operation) failed: \(String(cString: strerror(code))) (errno \(code))"
    }
}

/// A byte source over a file descriptor (a file, a pipe, a socket), read with `read(2)`.
/// It does not own the descriptor unless `closeOnDeinit` is set.
public final class FileDescriptorByteSource: ByteSource {
    /// The descriptor read from.
    public let fd: Int32
    private let closeOnDeinit: Bool

    public init(fd: Int32, closeOnDeinit: Bool = false) { (self.fd, self.closeOnDeinit) = (fd, closeOnDeinit) }

    /// Opens `path` for reading.
    public convenience init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ByteIOError(operation: "open \(path)", code: errno) }
        self.init(fd: fd, closeOnDeinit: true)
    }

    deinit { if closeOnDeinit { _ = close(fd) } }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let n = systemRead(fd, base, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw ByteIOError(operation: "read", code: errno) }
        }
    }
}

/// A byte sink over a file descriptor, written with `write(2)` until every byte is out.
/// It does not own the descriptor unless `closeOnDeinit` is set.
public final class FileDescriptorByteSink: ByteSink {
    public let fd: Int32
    private let closeOnDeinit: Bool

    public init(fd: Int32, closeOnDeinit: Bool = false) { (self.fd, self.closeOnDeinit) = (fd, closeOnDeinit) }

    /// Creates (or truncates) `path` for writing.
    public convenience init(creating path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ByteIOError(operation: "open \(path)", code: errno) }
        self.init(fd: fd, closeOnDeinit: true)
    }

    deinit { if closeOnDeinit { _ = close(fd) } }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = systemWrite(fd, base + done, bytes.count - done)
            if n > 0 {
                done += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            throw ByteIOError(operation: "write", code: n < 0 ? errno : EIO)
        }
    }
}

@inline(__always)
private func systemRead(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buf, count)
}

@inline(__always)
private func systemWrite(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buf, count)
}
