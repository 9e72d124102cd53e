import Foundation
import MigrationCore
import Synchronization
import VFIO
import VFIOSimulator

/// A VMM stand-in for conformance runs: remembers whether the guest runs, how often it was
/// stopped and resumed, and where each vCPU stop and start fell in the simulator's order.
public final class TestVM: VMController, Sendable {
    private struct State {
        var running: Bool
        var stops: [UInt64] = []
        var resumes: [UInt64] = []
    }
    private let state: Mutex<State>

    public init(running: Bool) { state = Mutex(State(running: running)) }

    public var isRunning: Bool { state.withLock { $0.running } }
    public var stopCount: Int { state.withLock { $0.stops.count } }
    public var resumeCount: Int { state.withLock { $0.resumes.count } }
    /// The `SimulatedVFIOSequence` number of each vCPU stop, oldest first.
    public var stopSequences: [UInt64] { state.withLock { $0.stops } }
    /// The `SimulatedVFIOSequence` number of each vCPU start, oldest first.
    public var resumeSequences: [UInt64] { state.withLock { $0.resumes } }

    public func stopVM() throws {
        state.withLock {
            $0.running = false
            $0.stops.append(SimulatedVFIOSequence.next())
        }
    }
    public func resumeVM() throws {
        state.withLock {
            $0.running = true
            $0.resumes.append(SimulatedVFIOSequence.next())
        }
    }
}

/// A connection that keeps a copy of everything written through it.
final class RecordingConnection: MigrationConnection, Sendable {
    private let base: any MigrationConnection
    private let bytes = Mutex<[UInt8]>([])

    init(wrapping base: any MigrationConnection) { self.base = base }

    var recorded: [UInt8] { bytes.withLock { $0 } }
    var supportsReturnPath: Bool { base.supportsReturnPath }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try base.read(into: buffer) }
    func write(_ data: UnsafeRawBufferPointer) throws {
        try base.write(data)
        bytes.withLock { $0.append(contentsOf: data) }
    }
    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }
}

func capture<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
