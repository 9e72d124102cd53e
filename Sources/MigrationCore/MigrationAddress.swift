/// A migration address in QEMU's URI syntax.
public enum MigrationAddress: Sendable, Hashable, CustomStringConvertible {
    /// `tcp:HOST:PORT`; IPv6 hosts in brackets (`tcp:[::1]:4444`). Port 0 listens on any free
    /// port (see ``TCPListener/port``).
    case tcp(host: String, port: UInt16)
    /// `unix:PATH`.
    case unix(path: String)
    /// `file:PATH`: the source writes the stream to the file; the destination reads it. No
    /// return path.
    case file(path: String)
    /// `fd:N`: an already-open descriptor (a socket, or a file without return path).
    case fd(Int32)

    /// Parses `tcp:…`, `unix:…`, `file:…` or `fd:…`.
    public init(parsing text: String) throws {
        func bad(_ reason: String) -> TransportError { .invalidAddress(text, reason: reason) }
        guard let colon = text.firstIndex(of: ":") else { throw bad("expected SCHEME:…") }
        let scheme = text[..<colon]
        let rest = String(text[text.index(after: colon)...])
        switch scheme {
        case "tcp":
            guard let portColon = rest.lastIndex(of: ":") else { throw bad("expected tcp:HOST:PORT") }
            var host = String(rest[..<portColon])
            let portText = rest[rest.index(after: portColon)...]
            guard let port = UInt16(portText) else { throw bad("port \"\(portText)\" is not 0…65535") }
            if host.hasPrefix("[") {
                guard host.hasSuffix("]"), host.count >= 2 else { throw bad("unbalanced brackets in the host") }
                host = String(host.dropFirst().dropLast())
            } else if host.contains(":") {
                throw bad("an IPv6 host must be written in brackets, e.g. tcp:[::1]:4444")
            }
            self = .tcp(host: host, port: port)
        case "unix":
            guard !rest.isEmpty else { throw bad("empty socket path") }
            self = .unix(path: rest)
        case "file":
            guard !rest.isEmpty else { throw bad("empty file path") }
            self = .file(path: rest)
        case "fd":
            guard let fd = Int32(rest), fd >= 0 else { throw bad("\"\(rest)\" is not a descriptor number") }
            self = .fd(fd)
        default:
            throw bad("unknown scheme \"\(scheme)\" (tcp, unix, file or fd)")
        }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        case .file(let path): "file:\(path)"
        case .fd(let fd): "fd:\(fd)"
        }
    }

    /// The transport for this address.
    public var transport: any MigrationTransport {
        switch self {
        case .tcp(let host, let port): TCPTransport(host: host, port: port)
        case .unix(let path): UnixSocketTransport(path: path)
        case .file(let path): FileTransport(path: path)
        case .fd(let fd): DescriptorTransport(fd: fd)
        }
    }
}
