/// Errors the default hook implementations raise.
public enum MigrationHandlerError: Error, Sendable, CustomStringConvertible {
    case unsupported(identity: HandlerIdentity, hook: String)

    public var description: String {
        switch self {
        case .unsupported(let id, let hook): "\(id): the handler does not implement \(hook)"
        }
    }
}
