import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import TestSupport
import Testing

/// An ordered record of what happened on both sides, to check causality ("the source stopped
/// the guest after the destination approved") without timing.
final class EventLog: Sendable {
    private let events = Mutex<[String]>([])

    func append(_ event: String) { events.withLock { $0.append(event) } }
    var all: [String] { events.withLock { $0 } }
    func index(of event: String) -> Int? { all.firstIndex(of: event) }
    func count(of event: String) -> Int { all.filter { $0 == event }.count }
}

/// Virtual time: `now` moves only when someone sleeps or the test advances it. A sleep also
/// yields a little real time so threads waiting on the other side make progress.
final class VirtualClock: MigrationClock {
    private let current = Mutex<Duration>(.seconds(1000))
    private let realYield: Duration

    init(realYield: Duration = .microseconds(50)) { self.realYield = realYield }

    var now: Duration { current.withLock { $0 } }

    func sleep(until deadline: Duration) {
        current.withLock { $0 = max($0, deadline) }
        if realYield > .zero {
            var ts = timespec(tv_sec: 0, tv_nsec: Int(realYield.components.attoseconds / 1_000_000_000))
            nanosleep(&ts, nil)
        }
    }

    func advance(by d: Duration) { current.withLock { $0 += d } }
}

/// A guest the engines can stop and resume; hooks let handlers follow it.
final class TestVM: VMController {
    private struct State {
        var running: Bool
        var stops = 0
        var resumes = 0
    }

    private let state: Mutex<State>
    private let name: String
    private let log: EventLog
    private let onStop: @Sendable () -> Void
    private let onResume: @Sendable () -> Void

    init(
        name: String, running: Bool, log: EventLog, onStop: @escaping @Sendable () -> Void = {},
        onResume: @escaping @Sendable () -> Void = {}
    ) {
        self.state = Mutex(State(running: running))
        self.name = name
        self.log = log
        self.onStop = onStop
        self.onResume = onResume
    }

    var isRunning: Bool { state.withLock { $0.running } }
    var stops: Int { state.withLock { $0.stops } }
    var resumes: Int { state.withLock { $0.resumes } }

    func stopVM() throws {
        onStop()
        state.withLock {
            $0.running = false
            $0.stops += 1
        }
        log.append("\(name) stopVM")
    }

    func resumeVM() throws {
        state.withLock {
            $0.running = true
            $0.resumes += 1
        }
        onResume()
        log.append("\(name) resumeVM")
    }
}

/// Keeps every byte the source writes (to find the section boundaries of a reference run).
final class RecordingConnection: MigrationConnection {
    private let base: any MigrationConnection
    private let recorded = Mutex<[UInt8]>([])

    init(_ base: any MigrationConnection) { self.base = base }

    var bytes: [UInt8] { recorded.withLock { $0 } }
    var supportsReturnPath: Bool { base.supportsReturnPath }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try base.read(into: buffer) }
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try base.write(bytes)
        recorded.withLock { $0.append(contentsOf: bytes) }
    }
    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }
}

/// A record boundary in a stream written by the test handlers (whose bodies all start with a
/// be32 length, so a generic walker can skip them).
struct Boundary: CustomStringConvertible {
    var offset: Int
    var what: String
    /// The source phase that writes this record.
    var sourcePhase: MigrationPhase

    var description: String { "\(what)@\(offset)" }
}

func recordBoundaries(_ bytes: [UInt8]) throws -> [Boundary] {
    let r = StreamReader(source: MemoryByteSource(bytes))
    var out = [Boundary(offset: 0, what: "header", sourcePhase: .header)]
    try r.readFileHeader()
    out.append(Boundary(offset: r.offset, what: "configuration", sourcePhase: .header))
    _ = try r.readConfiguration()
    while true {
        let at = r.offset
        switch try r.readRecord() {
        case .section(let h):
            let phase: MigrationPhase =
                switch h.kind {
                case .start: .setup
                case .part: .iterating
                case .end, .full: .completing
                }
            out.append(Boundary(offset: at, what: "\(h.kind) \(h.binding.idstr)", sourcePhase: phase))
            let n = try r.readBE32()
            try r.skip(UInt64(n))
            try r.readFooter(sectionID: h.sectionID)
        case .command(let c):
            out.append(Boundary(offset: at, what: c.name, sourcePhase: c == .switchoverStart ? .completing : .header))
        case .eof:
            out.append(Boundary(offset: at, what: "EOF", sourcePhase: .completing))
            if try !r.isAtEnd() { out.append(Boundary(offset: r.offset, what: "VMDESCRIPTION", sourcePhase: .completing)) }
            return out
        }
    }
}

/// The commands of a stream, in order (for wire-shape checks).
func commandNames(_ bytes: [UInt8]) throws -> [String] {
    try recordBoundaries(bytes).map(\.what).filter { $0.uppercased() == $0 && $0 != "EOF" && $0 != "VMDESCRIPTION" }
}

/// Runs both engines concurrently and returns both outcomes.
func runBoth(
    source: MigrationSource, over sourceConnection: any MigrationConnection,
    destination: MigrationDestination, over destinationConnection: any MigrationConnection
)
    async -> (Result<MigrationStatistics, any Error>, Result<IncomingStatistics, any Error>)
{
    async let s = capture { try await source.run(over: sourceConnection) }
    async let d = capture { try await destination.run(over: destinationConnection) }
    return await (s, d)
}

extension Result {
    var error: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }

    var value: Success? {
        if case .success(let v) = self { return v }
        return nil
    }
}

/// Sleeps for real (for handlers that model load time without a virtual clock).
let realSleeper: @Sendable (Duration) -> Void = { d in
    let (s, atto) = d.components
    Thread.sleep(forTimeInterval: Double(s) + Double(atto) / 1e18)
}
