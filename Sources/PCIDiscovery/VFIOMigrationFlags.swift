/// The migration capabilities a VFIO device reports through `VFIO_DEVICE_FEATURE_MIGRATION`
/// (`struct vfio_device_feature_migration.flags`).
public struct VFIOMigrationFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The kernel's `migration_flags` bits.
    public let rawValue: UInt64
    /// Flags from the kernel's bits; unknown bits are kept.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `VFIO_MIGRATION_STOP_COPY`: the device can be stopped and its state read; required for any migration.
    public static let stopCopy = VFIOMigrationFlags(rawValue: 1 << 0)
    /// `VFIO_MIGRATION_P2P`: the device can stop issuing peer-to-peer DMA before it stops (multi-device VMs).
    public static let p2p = VFIOMigrationFlags(rawValue: 1 << 1)
    /// `VFIO_MIGRATION_PRE_COPY` (kernel 6.2): state can be copied while the VM still runs.
    public static let preCopy = VFIOMigrationFlags(rawValue: 1 << 2)

    /// The flag names in kernel order: `STOP_COPY, P2P, PRE_COPY`, plus unknown bits in hex.
    public var names: [String] {
        var out: [String] = []
        if contains(.stopCopy) { out.append("STOP_COPY") }
        if contains(.p2p) { out.append("P2P") }
        if contains(.preCopy) { out.append("PRE_COPY") }
        let unknown = rawValue & ~(Self.stopCopy.rawValue | Self.p2p.rawValue | Self.preCopy.rawValue)
        if unknown != 0 { out.append("0x" + hexString(unknown, width: 1)) }
        return out
    }

    /// `STOP_COPY|P2P|PRE_COPY`, or `none`.
    public var description: String { names.isEmpty ? "none" : names.joined(separator: "|") }
}
