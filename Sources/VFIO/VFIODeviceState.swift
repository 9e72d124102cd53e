/// `enum vfio_device_mig_state`: the eight migration states of a VFIO device (u32 on the wire).
///
/// ```
///            ┌──────────── saving group ─────────────┐
///  RUNNING ──┤ PRE_COPY ── PRE_COPY_P2P ── STOP_COPY │     RESUMING
///     │      └──────┬────────────┬───────────┬───────┘        │
///     └── RUNNING_P2P ───────────┘           │                │
///               └───────────── STOP ─────────┴────────────────┘
/// ```
/// ERROR is entered only by a failing driver and left only by reset.
public enum VFIODeviceState: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// `VFIO_DEVICE_STATE_ERROR`: the device failed; only reset recovers. Never requestable.
    case error = 0
    /// `VFIO_DEVICE_STATE_STOP`: no internal or external state change.
    case stop = 1
    /// `VFIO_DEVICE_STATE_RUNNING`: operating normally; the state after open and reset.
    case running = 2
    /// `VFIO_DEVICE_STATE_STOP_COPY`: stopped, the remaining state streams out of the save fd.
    case stopCopy = 3
    /// `VFIO_DEVICE_STATE_RESUMING`: stopped, absorbing state written to the resume fd.
    case resuming = 4
    /// `VFIO_DEVICE_STATE_RUNNING_P2P`: running but not initiating new peer-to-peer DMA.
    case runningP2P = 5
    /// `VFIO_DEVICE_STATE_PRE_COPY`: running while initial and dirty state stream out.
    case preCopy = 6
    /// `VFIO_DEVICE_STATE_PRE_COPY_P2P`: PRE_COPY plus the P2P quiesce.
    case preCopyP2P = 7

    /// The kernel's name of the state, e.g. `PRE_COPY_P2P`.
    public var description: String {
        switch self {
        case .error: "ERROR"
        case .stop: "STOP"
        case .running: "RUNNING"
        case .stopCopy: "STOP_COPY"
        case .resuming: "RESUMING"
        case .runningP2P: "RUNNING_P2P"
        case .preCopy: "PRE_COPY"
        case .preCopyP2P: "PRE_COPY_P2P"
        }
    }

    /// The migration flags a device must report for this state to exist on it.
    /// ERROR requires every bit including undefined ones, so no flag set satisfies it.
    public var requiredFlags: VFIOMigrationFlags {
        switch self {
        case .stop, .running, .stopCopy, .resuming: [.stopCopy]
        case .runningP2P: [.stopCopy, .p2p]
        case .preCopy: [.stopCopy, .preCopy]
        case .preCopyP2P: [.stopCopy, .p2p, .preCopy]
        case .error: VFIOMigrationFlags(rawValue: .max)
        }
    }

    /// Whether a device with `flags` has this state.
    public func isSupported(by flags: VFIOMigrationFlags) -> Bool {
        flags.isSuperset(of: requiredFlags)
    }

    /// PRE_COPY, PRE_COPY_P2P and STOP_COPY: the states that share one save fd.
    public var isSaving: Bool { self == .preCopy || self == .preCopyP2P || self == .stopCopy }

    /// PRE_COPY or PRE_COPY_P2P: the states where a save fd has a temporary end of data.
    public var isPreCopy: Bool { self == .preCopy || self == .preCopyP2P }
}

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
        [.stopCopy], [.stopCopy, .p2p], [.stopCopy, .preCopy], [.stopCopy, .p2p, .preCopy],
    ]

    /// Whether this is one of the four defined combinations.
    public var isDefinedCombination: Bool { Self.definedCombinations.contains(self) }

    /// The states a device with these flags has, in enum order (ERROR excluded).
    public var supportedStates: [VFIODeviceState] {
        VFIODeviceState.allCases.filter { $0.isSupported(by: self) }
    }

    public var description: String {
        var names: [String] = []
        if contains(.stopCopy) { names.append("STOP_COPY") }
        if contains(.p2p) { names.append("P2P") }
        if contains(.preCopy) { names.append("PRE_COPY") }
        let unknown = rawValue & ~(Self.stopCopy.rawValue | Self.p2p.rawValue | Self.preCopy.rawValue)
        if unknown != 0 { names.append("0x" + String(unknown, radix: 16)) }
        return names.isEmpty ? "[]" : names.joined(separator: "|")
    }
}
