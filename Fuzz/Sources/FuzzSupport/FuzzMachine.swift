import ExampleVM
import MigrationCore

/// The machine the engine targets migrate and the seed tool captures: a small example VM with
/// one device of each shipped kind, so each input reaches the ram, mlx5, generic VFIO and
/// mtty handlers in a few milliseconds.
public enum FuzzMachine {
    public static let configuration = ExampleMachineConfiguration(
        memoryBytes: 272 << 10, dirtyPagesPerSecond: 100,
        devices: [
            DeviceSpec(kind: .mlx5, stateBytes: 24 << 10, initialBytes: 8 << 10),
            DeviceSpec(kind: .vfioPCI, stateBytes: 12 << 10, initialBytes: 4 << 10),
            DeviceSpec(kind: .mtty, ports: 1)
        ])

    /// The first byte of an engine target's input: which parameters the run has.
    public struct Mode: Sendable {
        public var raw: UInt8
        public init(_ raw: UInt8) { self.raw = raw }

        public var switchoverAck: Bool { raw & 0x01 != 0 }
        /// Two multifd channels (their bytes follow the main stream's in the input).
        public var multifd: Bool { raw & 0x02 != 0 }
        public var extensions: Bool { raw & 0x04 == 0 }
        public var returnPath: Bool { raw & 0x08 == 0 }
        /// How many bytes each read of the input hands out (0: as many as asked).
        public var pieceSize: Int { [0, 1, 7, 64, 509, 4096, 65536, 0][Int(raw >> 4) & 7] }
    }

    /// The parameters of a run in `mode`, with deadlines short enough for in-process fuzzing
    /// (an input never makes a target wait on a peer: its bytes end, the peer has closed).
    public static func parameters(_ mode: Mode) -> MigrationParameters {
        var p = MigrationParameters()
        p.switchoverAck = mode.switchoverAck
        p.extensions = mode.extensions
        p.returnPath = mode.returnPath
        p.multifdChannels = mode.multifd ? 2 : 0
        p.stallTimeout = .seconds(5)
        p.switchoverTimeout = .seconds(5)
        p.convergenceWindow = nil
        p.multifdDrainTimeout = .seconds(5)
        p.downtimeLimit = .seconds(1)
        return p
    }
}
