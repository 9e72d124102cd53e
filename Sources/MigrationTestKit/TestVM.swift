import Foundation
import MigrationCore
import VFIO

/// A VMM stand-in for conformance runs: remembers whether the guest runs, how often it was
/// stopped and resumed, and where each vCPU stop and start fell in the simulator's order.
public final class TestVM: VMController, @unchecked Sendable {
    private let lock = NSLock()
    private var running: Bool
    private var stops: [UInt64] = []
    private var resumes: [UInt64] = []

    public init(running: Bool) { self.running = running }

    public var isRunning: Bool { lock.withLock { running } }
    public var stopCount: Int { lock.withLock { stops.count } }
    public var resumeCount: Int { lock.withLock { resumes.count } }
    /// The ``SimulatedVFIOSequence`` number of each vCPU stop, oldest first.
    public var stopSequences: [UInt64] { lock.withLock { stops } }
    /// The ``SimulatedVFIOSequence`` number of each vCPU start, oldest first.
    public var resumeSequences: [UInt64] { lock.withLock { resumes } }

    public func stopVM() throws { lock.withLock { running = false; stops.append(SimulatedVFIOSequence.next()) } }
    public func resumeVM() throws { lock.withLock { running = true; resumes.append(SimulatedVFIOSequence.next()) } }
}

/// A connection that keeps a copy of everything written through it.
final class RecordingConnection: MigrationConnection, @unchecked Sendable {
    private let base: any MigrationConnection
    private let lock = NSLock()
    private var bytes: [UInt8] = []

    init(wrapping base: any MigrationConnection) { self.base = base }

    var recorded: [UInt8] { lock.withLock { bytes } }
    var supportsReturnPath: Bool { base.supportsReturnPath }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try base.read(into: buffer) }
    func write(_ data: UnsafeRawBufferPointer) throws {
        try base.write(data)
        lock.withLock { bytes.append(contentsOf: data) }
    }
    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }
}

func capture<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
