import Synchronization

#if canImport(Glibc)
import Glibc
#endif

func unixAddress(_ path: String) throws -> sockaddr_un {
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
    private let listening: ListeningSocket
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
        self.listening = ListeningSocket(fd)
        self.path = path
    }

    deinit { _ = unlink(path) }

    public func accept() throws -> any MigrationConnection {
        try listening.accept { DescriptorConnection(fd: $0, label: "unix:\(path)") }
    }

    public func close() { listening.close() }
}
