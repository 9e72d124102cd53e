/// One completed single step of a simulated device's state machine.
public struct SimulatedVFIOArc: Sendable, Equatable, CustomStringConvertible {
    public var from: VFIODeviceState
    public var to: VFIODeviceState

    public init(_ from: VFIODeviceState, _ to: VFIODeviceState) {
        self.from = from
        self.to = to
    }

    public var description: String { "\(from)→\(to)" }
}
