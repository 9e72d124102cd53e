import MigrationStream
import VFIO

/// Why the VFIO-PCI handler failed. Every case names the device and the phase.
public enum VFIOPCIHandlerError: Error, Sendable, CustomStringConvertible {
    /// The device offers no migration (the kernel answered the MIGRATION probe with ENOTTY/EINVAL).
    case migrationUnsupported(device: String)
    /// The device's migration flags lack STOP_COPY, which every migration needs.
    case noStopCopy(device: String, flags: VFIOMigrationFlags)
    /// A VFIO call failed in a phase.
    case device(device: String, phase: String, VFIOError)
    /// The section body broke the VFIO format.
    case badSection(device: String, offset: Int, reason: String)
    /// The source sent INIT_DATA_SENT although switchover-ack is off here, or the device has no PRE_COPY.
    case unexpectedInitDataSent(device: String, offset: Int)
    /// The config state's length differs from this device's.
    case configStateMismatch(device: String, offset: Int, expected: Int)
    /// A migration with `devices` VFIO devices, some of which lack P2P: the device list.
    case multipleDevicesWithoutP2P(device: String, withoutP2P: [String], devices: Int)
    /// The device could not run again when the guest started; it was reset (unless
    /// `resetError` says the reset failed too).
    case startFailed(device: String, target: VFIODeviceState, VFIOError, resetError: VFIOError?)

    public var description: String {
        switch self {
        case .migrationUnsupported(let d):
            "\(d): the device offers no VFIO migration"
        case .noStopCopy(let d, let flags):
            "\(d): migration flags \(flags) lack STOP_COPY"
        case .device(let d, let phase, let error):
            "\(d): \(phase): \(error)"
        case .badSection(let d, let offset, let reason):
            "\(d): bad VFIO section at byte \(offset): \(reason)"
        case .unexpectedInitDataSent(let d, let offset):
            "\(d): received INIT_DATA_SENT at byte \(offset) but switchover-ack is not in use for this device"
        case .configStateMismatch(let d, let offset, let expected):
            "\(d): config state at byte \(offset) does not match this device's \(expected) bytes"
        case .multipleDevicesWithoutP2P(let d, let without, let count):
            "\(d): the migration has \(count) VFIO devices and \(without.joined(separator: ", ")) \(without.count == 1 ? "lacks" : "lack") P2P "
                + "(RUNNING_P2P): without it a device cannot be quiesced before the others stop, so the migration is blocked "
                + "(MigrationParameters.allowDevicesWithoutP2P lets it through)"
        case .startFailed(let d, let target, let error, let resetError):
            "\(d): could not enter \(target) when the guest started: \(error); "
                + (resetError.map { "the reset that followed failed too: \($0)" } ?? "the device was reset (its state is lost)")
        }
    }
}
