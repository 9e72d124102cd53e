/// The source's view of the switchover acknowledgement (``MigrationSource/acknowledgement``).
public struct SwitchoverAcknowledgement: Sendable, Hashable {
    /// QEMU's single SWITCHOVER_ACK came and (extensions) no handler has withdrawn its own.
    public var acknowledged: Bool
    /// Each handler's state: ``AckState/unknown`` without extensions.
    public var handlers: [HandlerIdentity: AckState]
}
