import MigrationStream
import SystemPackage

/// A connected migration channel.
///
/// The source writes the main stream with ``/MigrationStream/ByteSink/write(_:)`` and reads the return path
/// with ``/MigrationStream/ByteSource/read(into:)`` (on its return-path thread, concurrently with the writes);
/// the destination does the opposite. A channel without a reverse direction (a file) says so
/// with ``supportsReturnPath``.
public protocol MigrationConnection: ByteSource, ByteSink, Sendable {
    /// Whether the channel carries the return path in the reverse direction.
    var supportsReturnPath: Bool { get }
    /// Bounds each blocked read and write (real time); nil waits forever. A read or write that
    /// makes no progress for that long throws ``TransportError/timedOut(operation:after:)``.
    func setTimeouts(read: Duration?, write: Duration?)
    /// Unblocks every blocked read and write, on any thread, and makes later ones fail
    /// (QEMU `qemu_file_shutdown`). Idempotent.
    func shutdown()
    /// Releases the channel. Call once no thread uses it any more. Idempotent.
    func close()
}

extension MigrationConnection {
    public func setTimeouts(read: Duration?, write: Duration?) {}
}

/// Waits for the incoming connection of a destination.
public protocol MigrationListener: AnyObject, Sendable {
    /// Blocks until the source connects (or the file is opened).
    func accept() throws -> any MigrationConnection
    /// Stops listening; a blocked ``accept()`` throws. Idempotent.
    func close()
}

/// A way to connect a source to a destination. Implement it to add a transport of your own.
public protocol MigrationTransport: Sendable {
    /// Source: opens the outgoing channel.
    func connect() throws -> any MigrationConnection
    /// Destination: starts listening (binding the address) for one incoming migration.
    func listen() throws -> any MigrationListener
}

/// Why a transport operation failed.
public enum TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The address could not be parsed or resolved.
    case invalidAddress(String, reason: String)
    /// A system call failed with `errno`.
    case system(operation: String, errno: Errno)
    /// The peer closed or reset the connection.
    case connectionClosed(operation: String)
    /// A blocked read or write made no progress within the timeout.
    case timedOut(operation: String, after: Duration)
    /// The channel was shut down (cancel, or the other side of the engine failed).
    case shutDown
    /// ``FaultInjectingConnection`` cut the connection here.
    case injectedCut(offset: Int)

    public var description: String {
        switch self {
        case .invalidAddress(let address, let reason): "invalid migration address \"\(address)\": \(reason)"
        case .system(let op, let errno): "\(op) failed: \(errno) (errno \(errno.rawValue))"
        case .connectionClosed(let op): "the peer closed the connection (\(op))"
        case .timedOut(let op, let after): "\(op) made no progress for \(after)"
        case .shutDown: "the connection was shut down"
        case .injectedCut(let offset): "connection cut by fault injection at byte \(offset)"
        }
    }
}

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

extension ByteIOError {
    /// ``/MigrationStream/ByteIOError/code`` as swift-system's `Errno`, the errno type the rest
    /// of Switchover uses (MigrationStream depends on nothing, so it keeps the raw value).
    public var errno: Errno { Errno(rawValue: code) }
}
