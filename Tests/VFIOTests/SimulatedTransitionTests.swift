import SystemPackage
import Testing
import VFIO

@testable import VFIOSimulator

@Suite("Simulated device: every transition of every flag set, generated from the reference table")
struct SimulatedTransitionTests {
    static let stateSize: UInt64 = 64

    /// A device of `flags` driven from RUNNING to `state`; returns the data fd that opened, if any.
    static func device(_ flags: VFIOMigrationFlags, at state: VFIODeviceState) throws -> (SimulatedVFIODevice, VFIOMigrationDataFD?) {
        let device = try SimulatedVFIODevice(
            .opaque(name: "sim-\(flags.rawValue)", migration: flags, size: stateSize, initialBytes: 16),
            clock: ManualSimulationClock())
        let fd = try device.setState(state)
        if state == .resuming {
            // A complete state, so RESUMING→STOP can commit.
            try fd?.write([UInt8](repeating: 0xA5, count: Int(stateSize)))
        }
        device.clearRecordedArcs()
        return (device, fd)
    }

    @Test("SET follows the table's path and opens an fd exactly where the reference marks one", arguments: TransitionCase.all)
    func transitionFollowsReference(_ c: TransitionCase) throws {
        let (device, oldFD) = try Self.device(c.flags, at: c.from)
        #expect(device.currentState == c.from)

        guard c.to != .error, c.to.isSupported(by: c.flags) else {
            #expect(throws: VFIOError.unsupportedState(device: device.name, requested: c.to, flags: c.flags)) {
                try device.setState(c.to)
            }
            #expect(device.recordedArcs.isEmpty)
            #expect(device.currentState == c.from)
            return
        }
        if c.from == .stopCopy, c.to.isPreCopy {
            #expect(throws: VFIOError.forbiddenTransition(device: device.name, from: .stopCopy, to: c.to)) {
                try device.setState(c.to)
            }
            #expect(device.recordedArcs.isEmpty)
            #expect(device.currentState == .stopCopy)
            return
        }
        let expected = try #require(ReferenceTable.path(c.from, c.to, c.flags))
        let newFD = try device.setState(c.to)

        var arcs: [SimulatedVFIOArc] = []
        var state = c.from
        for step in expected {
            arcs.append(SimulatedVFIOArc(state, step))
            state = step
        }
        #expect(device.recordedArcs == arcs)
        #expect(device.currentState == c.to)
        #expect(try device.deviceState() == c.to)

        let opensFD = arcs.last.map { ReferenceTable.opensFD($0.from, $0.to) } ?? false
        #expect((newFD != nil) == opensFD)
        if let newFD {
            #expect(newFD.direction == (c.to == .resuming ? .resume : .save))
        }

        // The old session survives only while every step stays inside the saving group.
        guard let oldFD else { return }
        let survives = expected.isEmpty || (c.from.isSaving && expected.allSatisfy(\.isSaving))
        if oldFD.direction == .save {
            let result = Result { () throws(VFIOError) in try oldFD.readChunk(8) }
            if survives {
                #expect(throws: Never.self) { try result.get() }
            } else {
                #expect(throws: VFIOError.syscallFailed(operation: .read, device: device.name, errno: .operationNotSupportedByDevice)) {
                    try result.get()
                }
            }
        } else {
            let result = Result { () throws(VFIOError) in try oldFD.write([1]) }
            // A live resume session refuses bytes beyond the state size (ENOMEM); a dead one answers ENODEV.
            let errno: Errno = survives ? .noMemory : .operationNotSupportedByDevice
            #expect(throws: VFIOError.syscallFailed(operation: .write, device: device.name, errno: errno)) { try result.get() }
        }
    }
}
