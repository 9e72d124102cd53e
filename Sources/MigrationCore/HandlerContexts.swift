import MigrationStream

/// What the engine tells a source-side hook about the migration it runs in.
public protocol SaveContext: AnyObject, Sendable {
    /// The handler's registration (idstr, instance id, version id).
    var identity: HandlerIdentity { get }
    /// Whether the switchover-ack capability is on for this migration.
    var switchoverAckEnabled: Bool { get }
    /// Whether this handler's stop-copy data goes over multifd channels.
    var multifdTransfer: Bool { get }
    /// Whether the guest is running (false once the VM is stopped for the switchover, or if
    /// the migration started with a paused guest).
    var vmRunning: Bool { get }
    /// The migration's parameters (e.g. ``MigrationParameters/allowDevicesWithoutP2P``).
    var parameters: MigrationParameters { get }
    /// Every active handler of this migration, in emission order (this one included): for a
    /// check that spans devices, such as VFIO's refusal of several devices without P2P.
    var participants: [any MigrationHandler] { get }
}

extension SaveContext {
    public var parameters: MigrationParameters { MigrationParameters() }
    public var participants: [any MigrationHandler] { [] }
}

/// What the engine offers a destination-side hook.
public protocol LoadContext: AnyObject, Sendable {
    var identity: HandlerIdentity { get }
    var switchoverAckEnabled: Bool { get }
    var multifdTransfer: Bool { get }
    /// Acknowledges this handler for the switchover (its initial data is loaded): QEMU's
    /// `qemu_loadvm_approve_switchover`. Throws when switchover-ack is off, the handler did
    /// not say it needs an acknowledgement, or it is already acknowledged. Usually called from
    /// ``MigrationHandler/loadState(from:header:context:)``; safe to call from any thread.
    func approveSwitchover() throws
    /// Withdraws this handler's acknowledgement because new initial data appeared (the 2026
    /// `VFIO_PRECOPY_INFO_REINIT`); the source will not switch over until it is given again.
    /// Only a Switchover source hears of a revocation that follows the one QEMU-compatible
    /// SWITCHOVER_ACK (through ACK_STATE); a QEMU source has already been told it may switch
    /// over. Throws when the handler is not acknowledged. Safe to call from any thread.
    func revokeSwitchover() throws
}
