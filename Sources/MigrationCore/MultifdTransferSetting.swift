/// A handler's per-device multifd setting: QEMU's vfio-pci property
/// `x-migration-multifd-transfer` (ON/OFF/AUTO, default AUTO).
public enum MultifdTransferSetting: String, Sendable, Hashable, CaseIterable {
    /// Use multifd when the migration has channels and the handler supports it.
    case auto
    /// Always: a migration without channels, or a handler without support, is refused at start.
    case on
    /// Never: the stop-copy data stays in the END section of the main channel.
    case off
}
