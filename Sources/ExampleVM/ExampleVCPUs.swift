import Foundation
import MigrationCore
import Synchronization
import VFIO
import VFIOSimulator

/// The example VM's vCPUs: on a source they are the guest workload (stopping the vCPUs stops
/// the page dirtying); on a destination a flag, and the workload when asked to run after
/// the migration. Each stop and start takes a number in the simulator's order
/// (``SimulatedVFIOSequence``), so ``ExampleMachine/lifecycle`` can place it among the
/// devices' transitions.
public final class ExampleVCPUs: VMController, Sendable {
    private let vm: ExampleVM
    private let drivesWorkload: Bool
    private let state = Mutex<(running: Bool, events: [LifecycleEvent])>((false, []))

    init(vm: ExampleVM, drivesWorkload: Bool) { (self.vm, self.drivesWorkload) = (vm, drivesWorkload) }

    /// The vCPU stops and starts so far.
    var recorded: [LifecycleEvent] { state.withLock { $0.events } }

    public var isRunning: Bool { state.withLock { $0.running } }

    public func stopVM() throws {
        vm.stop()
        state.withLock {
            $0.running = false
            $0.events.append(LifecycleEvent(sequence: SimulatedVFIOSequence.next(), subject: "vCPUs", change: "stop"))
        }
    }

    public func resumeVM() throws {
        if drivesWorkload { vm.resume() }
        state.withLock {
            $0.running = true
            $0.events.append(LifecycleEvent(sequence: SimulatedVFIOSequence.next(), subject: "vCPUs", change: "start"))
        }
    }
}

/// One step of a machine's run-state history: a vCPU stop or start, or a device's state change.
public struct LifecycleEvent: Sendable, Hashable, CustomStringConvertible {
    /// The place in the process-wide order (``SimulatedVFIOSequence``).
    public var sequence: UInt64
    /// "vCPUs" or a device's address.
    public var subject: String
    /// "stop", "start", or a transition such as "PRE_COPY→PRE_COPY_P2P".
    public var change: String

    public var description: String { "\(subject) \(change)" }

    /// The events from the last vCPU stop (source) or, on a destination, from the end of the
    /// load, as one line: "vCPUs stop, 0000:00:05.0 PRE_COPY→PRE_COPY_P2P, …".
    public static func line(_ events: [LifecycleEvent]) -> String {
        events.map(\.description).joined(separator: ", ")
    }
}
