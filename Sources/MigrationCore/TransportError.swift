import SystemPackage

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
