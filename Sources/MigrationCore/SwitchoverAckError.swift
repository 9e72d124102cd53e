/// Why a ``LoadContext`` call was refused.
public enum SwitchoverAckError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Switchover-ack is off for this migration.
    case disabled(HandlerIdentity)
    /// The handler said it does not need an acknowledgement.
    case notNeeded(HandlerIdentity)
    /// Approved twice without a revocation between.
    case alreadyAcknowledged(HandlerIdentity)
    /// Revoked while not acknowledged.
    case notAcknowledged(HandlerIdentity)

    public var description: String {
        switch self {
        case .disabled(let id): "\(id): switchover-ack is not used in this migration"
        case .notNeeded(let id): "\(id): the handler did not ask for a switchover acknowledgement"
        case .alreadyAcknowledged(let id): "\(id): the switchover is already acknowledged"
        case .notAcknowledged(let id): "\(id): the switchover was not acknowledged, there is nothing to revoke"
        }
    }
}
