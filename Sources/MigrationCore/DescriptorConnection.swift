import MigrationStream
import Synchronization
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
    private struct State {
        var readTimeout: Duration?
        var writeTimeout: Duration?
        var shutDown = false
        var closed = false
    }

    /// The descriptor.
    public let fd: Int32
    public let supportsReturnPath: Bool
    private let isSocket: Bool
    private let ownsDescriptor: Bool
    private let label: String
    private let state = Mutex(State())

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

    public func setTimeouts(read: Duration?, write: Duration?) {
        state.withLock { s in
            s.readTimeout = read
            s.writeTimeout = write
        }
    }

    /// Waits until `fd` is ready for `events` (or hung up); throws on timeout.
    private func waitReady(_ events: Int16, timeout: Duration?, operation: String) throws {
        let clock = MonotonicClock()
        let deadline = timeout.map { clock.now + $0 }
        while true {
            var ms: Int32 = -1
            if let deadline {
                let left = deadline - clock.now
                if left <= .zero { throw TransportError.timedOut(operation: operation, after: timeout ?? .zero) }
                ms = Int32(min(left.milliseconds.rounded(.up), 60_000))
            }
            var pfd = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&pfd, 1, ms)
            if r > 0 { return }
            if r < 0 && errno != EINTR { throw systemError("poll") }
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let (timeout, shutDown) = state.withLock { ($0.readTimeout, $0.shutDown) }
        if shutDown { return 0 }
        while true {
            if timeout != nil { try waitReady(Int16(POLLIN), timeout: timeout, operation: "read on \(label)") }
            let n = isSocket ? recv(fd, base, buffer.count, 0) : Glibc.read(fd, base, buffer.count)
            if n >= 0 { return n }
            let e = errno
            switch e {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try waitReady(Int16(POLLIN), timeout: timeout, operation: "read on \(label)")
            case ECONNRESET, ENOTCONN: throw TransportError.connectionClosed(operation: "read on \(label)")
            default: throw systemError("read on \(label)", e)
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        let timeout = state.withLock { $0.writeTimeout }
        var done = 0
        while done < bytes.count {
            if state.withLock({ $0.shutDown }) { throw TransportError.shutDown }
            if timeout != nil { try waitReady(Int16(POLLOUT), timeout: timeout, operation: "write on \(label)") }
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
            case EAGAIN, EWOULDBLOCK: try waitReady(Int16(POLLOUT), timeout: timeout, operation: "write on \(label)")
            case EPIPE, ECONNRESET, ENOTCONN: throw TransportError.connectionClosed(operation: "write on \(label)")
            default: throw systemError("write on \(label)", e)
            }
        }
    }

    public func shutdown() {
        let first = state.withLock { s -> Bool in
            defer { s.shutDown = true }
            return !s.shutDown && !s.closed
        }
        if first && isSocket { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    public func close() {
        let first = state.withLock { s -> Bool in
            defer { s.closed = true }
            return !s.closed
        }
        if first && ownsDescriptor { _ = Glibc.close(fd) }
    }
}
