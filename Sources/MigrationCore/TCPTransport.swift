import MigrationStream
import Synchronization
import SystemPackage

#if canImport(Glibc)
import CSwitchoverLibc
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `accept4(2)` with SOCK_CLOEXEC: the new socket is close-on-exec from its creation (accept4 is a GNU
/// extension the Glibc module map does not expose; the C shim calls it).
func acceptCloexec(_ fd: Int32) -> Int32 {
    switchover_accept4(fd, Int32(SOCK_CLOEXEC.rawValue))
}

func resolve(host: String, port: UInt16, passive: Bool) throws -> [(family: Int32, address: [UInt8])] {
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

func setNoDelay(_ fd: Int32) {
    var one: Int32 = 1
    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
}

/// `tcp:HOST:PORT`, IPv4 or IPv6.
public struct TCPTransport: MigrationTransport {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) { (self.host, self.port) = (host, port) }

    public func connect() throws -> any MigrationConnection {
        let label = MigrationAddress.tcp(host: host, port: port).description
        let fd = try firstSocket(host: host, port: port, passive: false, label: label) { fd, address in
            let rc = address.withUnsafeBytes { raw in
                Glibc.connect(fd, raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
            }
            return rc == 0 ? nil : systemError("connect to \(label)")
        }
        setNoDelay(fd)
        return DescriptorConnection(fd: fd, label: label)
    }

    public func listen() throws -> any MigrationListener {
        try TCPListener(host: host, port: port)
    }
}

/// Listens on a TCP address (SO_REUSEADDR). Port 0 picks a free port: read ``port``.
public final class TCPListener: MigrationListener {
    private let listening: ListeningSocket
    /// The port actually bound.
    public let port: UInt16

    public init(host: String, port: UInt16, backlog: Int32 = 4) throws {
        let label = MigrationAddress.tcp(host: host, port: port).description
        var bound: UInt16 = 0
        let fd = try firstSocket(host: host, port: port, passive: true, label: label) { fd, address in
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let rc = address.withUnsafeBytes { raw in
                bind(fd, raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
            }
            guard rc == 0, Glibc.listen(fd, backlog) == 0 else { return systemError("bind/listen on \(label)") }
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let ok = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            guard ok == 0 else { return systemError("getsockname") }
            bound = withUnsafeBytes(of: &storage) { raw in
                // sin_port and sin6_port both sit at offset 2, in network order.
                UInt16(raw[2]) << 8 | UInt16(raw[3])
            }
            return nil
        }
        self.listening = ListeningSocket(fd)
        self.port = bound
    }

    public func accept() throws -> any MigrationConnection {
        try listening.accept { c in
            setNoDelay(c)
            return DescriptorConnection(fd: c, label: "tcp connection on port \(port)")
        }
    }

    public func close() { listening.close() }
}

/// A listening socket: its descriptor, the accept loop and the close that wakes it, shared by
/// the TCP and Unix listeners.
final class ListeningSocket: Sendable {
    private let fd: Int32
    private let closed = Mutex(false)

    /// Takes ownership of `fd`, bound and listening; closed in deinit.
    init(_ fd: Int32) { self.fd = fd }

    deinit { _ = Glibc.close(fd) }

    /// Accepts one connection (retrying EINTR and ECONNABORTED); `made` wraps its descriptor.
    func accept(_ made: (Int32) -> DescriptorConnection) throws -> any MigrationConnection {
        while true {
            if closed.withLock({ $0 }) { throw TransportError.shutDown }
            let c = acceptCloexec(fd)
            if c >= 0 { return made(c) }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if closed.withLock({ $0 }) { throw TransportError.shutDown }
            throw systemError("accept", e)
        }
    }

    /// The first call wakes a thread blocked in accept() (shutdown); the descriptor is closed in deinit.
    func close() {
        let first = closed.withLock { c -> Bool in
            defer { c = true }
            return !c
        }
        if first { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

/// A stream socket on the first address `host` resolves to that `setUp` accepts (it returns
/// nil); an address it refuses (with the error) is closed and the next tried. Throws the last
/// error when none is accepted.
func firstSocket(
    host: String, port: UInt16, passive: Bool, label: String, _ setUp: (Int32, [UInt8]) -> TransportError?
) throws -> Int32 {
    var lastError: TransportError = .invalidAddress(label, reason: "no address")
    for (family, address) in try resolve(host: host, port: port, passive: passive) {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            lastError = systemError("socket")
            continue
        }
        guard let error = setUp(fd, address) else { return fd }
        lastError = error
        _ = Glibc.close(fd)
    }
    throw lastError
}
