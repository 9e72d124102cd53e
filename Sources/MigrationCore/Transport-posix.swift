import MigrationStream
import SystemPackage

#if canImport(Glibc)
import CSwitchoverLibc
import Glibc
#elseif canImport(Darwin)
import Darwin
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
    private let state = Monitor(State())

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

// MARK: - TCP

/// `accept4(2)` with SOCK_CLOEXEC: the new socket is close-on-exec from its creation (accept4 is a GNU
/// extension the Glibc module map does not expose; the C shim calls it).
private func acceptCloexec(_ fd: Int32) -> Int32 {
    switchover_accept4(fd, Int32(SOCK_CLOEXEC.rawValue))
}

private func resolve(host: String, port: UInt16, passive: Bool) throws -> [(family: Int32, address: [UInt8])] {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = passive ? AI_PASSIVE : 0
    var list: UnsafeMutablePointer<addrinfo>?
    let node: String? = host.isEmpty ? nil : host
    let rc = getaddrinfo(node, String(port), &hints, &list)
    guard rc == 0 else {
        throw TransportError.invalidAddress("tcp:\(host):\(port)", reason: String(cString: gai_strerror(rc)))
    }
    defer { freeaddrinfo(list) }
    var out: [(Int32, [UInt8])] = []
    var cursor = list
    while let info = cursor {
        if let addr = info.pointee.ai_addr {
            out.append((info.pointee.ai_family, Array(UnsafeRawBufferPointer(start: addr, count: Int(info.pointee.ai_addrlen)))))
        }
        cursor = info.pointee.ai_next
    }
    return out
}

private func setNoDelay(_ fd: Int32) {
    var one: Int32 = 1
    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
}

/// `tcp:HOST:PORT`, IPv4 or IPv6.
public struct TCPTransport: MigrationTransport {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public func connect() throws -> any MigrationConnection {
        let label = MigrationAddress.tcp(host: host, port: port).description
        var lastError: TransportError = .invalidAddress(label, reason: "no address")
        for (family, address) in try resolve(host: host, port: port, passive: false) {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 {
                lastError = systemError("socket")
                continue
            }
            let rc = address.withUnsafeBytes { raw in
                Glibc.connect(fd, raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
            }
            if rc == 0 {
                setNoDelay(fd)
                return DescriptorConnection(fd: fd, label: label)
            }
            lastError = systemError("connect to \(label)")
            _ = Glibc.close(fd)
        }
        throw lastError
    }

    public func listen() throws -> any MigrationListener {
        try TCPListener(host: host, port: port)
    }
}

/// Listens on a TCP address (SO_REUSEADDR). Port 0 picks a free port: read ``port``.
public final class TCPListener: MigrationListener {
    private let fd: Int32
    private let closed = Monitor(false)
    /// The port actually bound.
    public let port: UInt16

    public init(host: String, port: UInt16, backlog: Int32 = 4) throws {
        let label = MigrationAddress.tcp(host: host, port: port).description
        var lastError: TransportError = .invalidAddress(label, reason: "no address")
        for (family, address) in try resolve(host: host, port: port, passive: true) {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 {
                lastError = systemError("socket")
                continue
            }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let rc = address.withUnsafeBytes { raw in
                bind(fd, raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
            }
            guard rc == 0, Glibc.listen(fd, backlog) == 0 else {
                lastError = systemError("bind/listen on \(label)")
                _ = Glibc.close(fd)
                continue
            }
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let ok = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            guard ok == 0 else {
                lastError = systemError("getsockname")
                _ = Glibc.close(fd)
                continue
            }
            let bound: UInt16 = withUnsafeBytes(of: &storage) { raw in
                // sin_port and sin6_port both sit at offset 2, in network order.
                UInt16(raw[2]) << 8 | UInt16(raw[3])
            }
            self.fd = fd
            self.port = bound
            return
        }
        throw lastError
    }

    deinit { _ = Glibc.close(fd) }

    public func accept() throws -> any MigrationConnection {
        while true {
            if closed.withLock({ $0 }) { throw TransportError.shutDown }
            let c = acceptCloexec(fd)
            if c >= 0 {
                setNoDelay(c)
                return DescriptorConnection(fd: c, label: "tcp connection on port \(port)")
            }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if closed.withLock({ $0 }) { throw TransportError.shutDown }
            throw systemError("accept", e)
        }
    }

    public func close() {
        let first = closed.withLock { c -> Bool in
            defer { c = true }
            return !c
        }
        // shutdown() wakes a thread blocked in accept(); the descriptor is closed in deinit.
        if first { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

// MARK: - Unix sockets

private func unixAddress(_ path: String) throws -> sockaddr_un {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: addr.sun_path)
    guard bytes.count < capacity else {
        throw TransportError.invalidAddress("unix:\(path)", reason: "the path is longer than \(capacity - 1) bytes")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
        raw[bytes.count] = 0
    }
    return addr
}

/// `unix:PATH`.
public struct UnixSocketTransport: MigrationTransport {
    public var path: String

    public init(path: String) { self.path = path }

    public func connect() throws -> any MigrationConnection {
        var addr = try unixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw systemError("socket") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let error = systemError("connect to unix:\(path)")
            _ = Glibc.close(fd)
            throw error
        }
        return DescriptorConnection(fd: fd, label: "unix:\(path)")
    }

    public func listen() throws -> any MigrationListener {
        try UnixSocketListener(path: path)
    }
}

/// Listens on a Unix socket path (an existing socket file is replaced).
public final class UnixSocketListener: MigrationListener {
    private let fd: Int32
    private let closed = Monitor(false)
    public let path: String

    public init(path: String, backlog: Int32 = 4) throws {
        var addr = try unixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw systemError("socket") }
        _ = unlink(path)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, Glibc.listen(fd, backlog) == 0 else {
            let error = systemError("bind/listen on unix:\(path)")
            _ = Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.path = path
    }

    deinit {
        _ = Glibc.close(fd)
        _ = unlink(path)
    }

    public func accept() throws -> any MigrationConnection {
        while true {
            if closed.withLock({ $0 }) { throw TransportError.shutDown }
            let c = acceptCloexec(fd)
            if c >= 0 { return DescriptorConnection(fd: c, label: "unix:\(path)") }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if closed.withLock({ $0 }) { throw TransportError.shutDown }
            throw systemError("accept", e)
        }
    }

    public func close() {
        let first = closed.withLock { c -> Bool in
            defer { c = true }
            return !c
        }
        if first { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

// MARK: - Files and descriptors

/// `file:PATH`: migrate to a file and load from it. No return path, so no switchover-ack
/// and no extensions.
public struct FileTransport: MigrationTransport {
    public var path: String

    public init(path: String) { self.path = path }

    public func connect() throws -> any MigrationConnection {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw systemError("open \(path) for writing") }
        return DescriptorConnection(fd: fd, supportsReturnPath: false, label: "file:\(path)")
    }

    public func listen() throws -> any MigrationListener {
        OnceListener { [path] in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw systemError("open \(path) for reading") }
            return DescriptorConnection(fd: fd, supportsReturnPath: false, label: "file:\(path)")
        }
    }
}

/// `fd:N`: an open descriptor handed over by the VMM; the connection takes ownership. A
/// socket carries the return path; anything else does not.
public struct DescriptorTransport: MigrationTransport {
    public var fd: Int32

    public init(fd: Int32) { self.fd = fd }

    public func connect() throws -> any MigrationConnection {
        DescriptorConnection(fd: fd)
    }

    public func listen() throws -> any MigrationListener {
        OnceListener { [fd] in DescriptorConnection(fd: fd) }
    }
}

/// A listener whose `accept` opens something once (a file, a given descriptor).
final class OnceListener: MigrationListener {
    private let open: @Sendable () throws -> any MigrationConnection
    private let used = Monitor(false)

    init(_ open: @escaping @Sendable () throws -> any MigrationConnection) { self.open = open }

    func accept() throws -> any MigrationConnection {
        let first = used.withLock { u -> Bool in
            defer { u = true }
            return !u
        }
        guard first else { throw TransportError.shutDown }
        return try open()
    }

    func close() { used.withLock { $0 = true } }
}
