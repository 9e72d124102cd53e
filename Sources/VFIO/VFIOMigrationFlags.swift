import SystemPackage

/// `VFIO_DEVICE_FEATURE_MIGRATION` flags: which optional migration states a device offers.
/// The defined sets are `[.stopCopy]`, `[.stopCopy, .p2p]`, `[.stopCopy, .preCopy]` and all three.
public struct VFIOMigrationFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `VFIO_MIGRATION_STOP_COPY` (1): STOP, STOP_COPY, RESUMING. Mandatory when migration is offered.
    public static let stopCopy = VFIOMigrationFlags(rawValue: 1 << 0)
    /// `VFIO_MIGRATION_P2P` (2): RUNNING_P2P.
    public static let p2p = VFIOMigrationFlags(rawValue: 1 << 1)
    /// `VFIO_MIGRATION_PRE_COPY` (4): PRE_COPY, and PRE_COPY_P2P together with P2P.
    public static let preCopy = VFIOMigrationFlags(rawValue: 1 << 2)

    /// The four flag sets the uAPI defines (1, 3, 5, 7).
    public static let definedCombinations: [VFIOMigrationFlags] = [
        [.stopCopy], [.stopCopy, .p2p], [.stopCopy, .preCopy], [.stopCopy, .p2p, .preCopy]
    ]

    /// Whether this is one of the four defined combinations.
    public var isDefinedCombination: Bool { Self.definedCombinations.contains(self) }

    /// The states a device with these flags has, in enum order (ERROR excluded).
    public var supportedStates: [VFIODeviceState] {
        VFIODeviceState.allCases.filter { $0.isSupported(by: self) }
    }

    /// The flag names in kernel order: `STOP_COPY`, `P2P`, `PRE_COPY`, then unknown bits in hex (`0x10`).
    public var names: [String] {
        var names: [String] = []
        if contains(.stopCopy) { names.append("STOP_COPY") }
        if contains(.p2p) { names.append("P2P") }
        if contains(.preCopy) { names.append("PRE_COPY") }
        let unknown = rawValue & ~(Self.stopCopy.rawValue | Self.p2p.rawValue | Self.preCopy.rawValue)
        if unknown != 0 { names.append("0x" + String(unknown, radix: 16)) }
        return names
    }

    public var description: String { names.isEmpty ? "[]" : names.joined(separator: "|") }
}

/// The kernel's whole answer to `VFIO_DEVICE_FEATURE` GET `MIGRATION`: the flags, or the errno
/// (ENOTTY or EINVAL) by which it said the device has no migration.
public enum VFIOMigrationSupport: Sendable, Hashable {
    /// The device offers migration with these flags.
    case supported(VFIOMigrationFlags)
    /// The device has no migration: the probe failed with this errno (ENOTTY or EINVAL).
    case unsupported(Errno)
}
