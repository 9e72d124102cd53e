import MigrationStream
import SystemPackage

#if canImport(Glibc)
import CSwitchoverLibc
import Glibc
#endif

func systemError(_ operation: String, _ code: Int32 = errno) -> TransportError {
    .system(operation: operation, errno: Errno(rawValue: code))
}

/// A connection over a file descriptor: a TCP or Unix socket, a socketpair end, a file, a pipe.
///
/// Sockets use `send(MSG_NOSIGNAL)` (a closed peer is an error, not SIGPIPE) and support the
/// return path; `shutdown()` unblocks readers and writers on other threads. Reads and writes
/// retry on EINTR and finish partial writes; with a timeout they wait with `poll`.
public final class DescriptorConnection: MigrationConnection, CustomStringConvertible {
    /// The descriptor.
    public let fd: Int32
    public let supportsReturnPath: Bool
    private let isSocket: Bool
    private let ownsDescriptor: Bool
    private let label: String
    private let state = ConnectionState()

    /// Wraps `fd`.
    /// - Parameters:
    ///   - fd: an open descriptor: a connected socket, a pipe or a file.
    ///   - supportsReturnPath: nil = true for sockets, false otherwise.
    ///   - ownsDescriptor: close `fd` in ``close()``.
    ///   - label: how the connection describes itself.
    public init(fd: Int32, supportsReturnPath: Bool? = nil, ownsDescriptor: Bool = true, label: String? = nil) {
        var st = stat()
        let socket = fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
        self.fd = fd
        self.isSocket = socket
        self.supportsReturnPath = supportsReturnPath ?? socket
        self.ownsDescriptor = ownsDescriptor
        self.label = label ?? "fd:\(fd)"
    }

    deinit { close() }

    public var description: String { label }

    /// Two connected Unix stream sockets: source and destination in one process (tests).
    public static func socketPair() throws -> (DescriptorConnection, DescriptorConnection) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw systemError("socketpair")
        }
        return (DescriptorConnection(fd: fds[0], label: "socketpair[0]"), DescriptorConnection(fd: fds[1], label: "socketpair[1]"))
    }

    public func setTimeouts(read: Duration?, write: Duration?) { state.setTimeouts(read: read, write: write) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let (timeout, shutDown) = state.reading
        if shutDown { return 0 }
        while true {
            if timeout != nil { try waitReady(fd, for: Int16(POLLIN), timeout: timeout, operation: "read on \(label)") }
            let n = isSocket ? recv(fd, base, buffer.count, 0) : Glibc.read(fd, base, buffer.count)
            if n >= 0 { return n }
            let e = errno
            switch e {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try waitReady(fd, for: Int16(POLLIN), timeout: timeout, operation: "read on \(label)")
            case ECONNRESET, ENOTCONN: throw TransportError.connectionClosed(operation: "read on \(label)")
            default: throw systemError("read on \(label)", e)
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        let timeout = state.writeTimeout
        var done = 0
        while done < bytes.count {
            if state.isShutDown { throw TransportError.shutDown }
            if timeout != nil { try waitReady(fd, for: Int16(POLLOUT), timeout: timeout, operation: "write on \(label)") }
            let left = bytes.count - done
            let n: Int
            if isSocket {
                // With a timeout, never block inside send: poll bounds the wait instead.
                let flags = Int32(MSG_NOSIGNAL) | (timeout != nil ? Int32(MSG_DONTWAIT) : 0)
                n = send(fd, base + done, left, flags)
            } else {
                n = Glibc.write(fd, base + done, left)
            }
            if n > 0 {
                done += n
                continue
            }
            let e = n < 0 ? errno : EAGAIN
            switch e {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try waitReady(fd, for: Int16(POLLOUT), timeout: timeout, operation: "write on \(label)")
            case EPIPE, ECONNRESET, ENOTCONN: throw TransportError.connectionClosed(operation: "write on \(label)")
            default: throw systemError("write on \(label)", e)
            }
        }
    }

    public func shutdown() {
        if state.markShutDown() && isSocket { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    public func close() {
        if state.markClosed() && ownsDescriptor { _ = Glibc.close(fd) }
    }
}
