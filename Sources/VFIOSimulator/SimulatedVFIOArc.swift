import Synchronization
import VFIO

/// One completed single step of a simulated device's state machine.
public struct SimulatedVFIOArc: Sendable, Equatable, CustomStringConvertible {
    public var from: VFIODeviceState
    public var to: VFIODeviceState

    public init(_ from: VFIODeviceState, _ to: VFIODeviceState) { (self.from, self.to) = (from, to) }

    public var description: String { "\(from)→\(to)" }
}

/// One state change of a simulated device, numbered across every simulated device in the
/// process: merge several devices' ``SimulatedVFIODevice/recordedTransitions`` and sort by
/// ``sequence`` to see the order in which they changed (the P2P barrier, for instance).
public struct SimulatedVFIOTransition: Sendable, Hashable, CustomStringConvertible {
    /// The place in the process-wide order (``SimulatedVFIOSequence``).
    public var sequence: UInt64
    /// The device's name.
    public var device: String
    public var from: VFIODeviceState
    public var to: VFIODeviceState
    /// A reset (`VFIO_DEVICE_RESET`, or the device fd closed) rather than an arc of the state machine.
    public var isReset: Bool

    public init(sequence: UInt64, device: String, from: VFIODeviceState, to: VFIODeviceState, isReset: Bool = false) {
        (self.sequence, self.device, self.from, self.to, self.isReset) = (sequence, device, from, to, isReset)
    }

    public var description: String { "#\(sequence) \(device) \(from)→\(to)\(isReset ? " (reset)" : "")" }
}

/// The process-wide counter that numbers simulated transitions. A test takes a number for an
/// event of its own (RAM's final pass, a vCPU stop) to place it among the devices' transitions.
public enum SimulatedVFIOSequence {
    private static let counter = Atomic<UInt64>(0)

    /// The next number: greater than every number handed out before.
    public static func next() -> UInt64 {
        counter.add(1, ordering: .sequentiallyConsistent).newValue
    }
}
