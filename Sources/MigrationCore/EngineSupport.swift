import Foundation
import Logging
import MigrationStream
import Synchronization

/// Cancellation and the resources a cancel must unblock, shared by the public engine object,
/// its migration thread and whoever calls `cancel()`.
final class EngineControl: Sendable {
    private struct State {
        var started = false
        var cancelled = false
        /// False once the source has written its whole stream: from then on the destination
        /// may already run the guest, so a cancel must not cut the connection.
        var cancellable = true
        var connection: (any MigrationConnection)?
        var listener: (any MigrationListener)?
    }

    private let state = Mutex(State())

    /// Marks the engine started; an engine runs once.
    func begin() throws {
        try state.withLock { s in
            guard !s.started else { throw MigrationError.invalidParameters("an engine runs one migration; create a new one") }
            s.started = true
        }
    }

    /// Records the connection so `cancel()` can shut it down; shuts it down at once if the
    /// engine was already cancelled.
    func attach(_ connection: any MigrationConnection) {
        let cancelled = state.withLock { s -> Bool in
            s.connection = connection
            return s.cancelled
        }
        if cancelled { connection.shutdown() }
    }

    func attach(_ listener: any MigrationListener) {
        let cancelled = state.withLock { s -> Bool in
            s.listener = listener
            return s.cancelled
        }
        if cancelled { listener.close() }
    }

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    func setUncancellable() { state.withLock { $0.cancellable = false } }

    /// Returns false when the cancel came too late to take effect.
    @discardableResult
    func cancel() -> Bool {
        let (ok, connection, listener) = state.withLock { s -> (Bool, (any MigrationConnection)?, (any MigrationListener)?) in
            guard s.cancellable else { return (false, nil, nil) }
            s.cancelled = true
            return (true, s.connection, s.listener)
        }
        connection?.shutdown()
        listener?.close()
        return ok
    }
}

/// Runs `body` on a dedicated thread (never the cooperative pool) and awaits its result.
func runOnDedicatedThread<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let thread = Thread {
            do {
                continuation.resume(returning: try body())
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.name = name
        thread.stackSize = 4 << 20
        thread.start()
    }
}

/// Starts a plain thread for a loop that the caller joins through shared state.
func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.stackSize = 1 << 20
    thread.start()
}

/// A value (a flag, a figure) shared between the migration thread and another thread or the
/// handlers' contexts that read it (nobody waits for it to change).
final class SharedValue<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ initial: Value) { value = Mutex(initial) }
    var get: Value { value.withLock { $0 } }
    func set(_ v: Value) { value.withLock { $0 = v } }
}

/// The ``SaveContext`` the source hands to each handler.
final class EngineSaveContext: SaveContext {
    let identity: HandlerIdentity
    let switchoverAckEnabled: Bool
    let multifdTransfer: Bool
    let parameters: MigrationParameters
    let participants: [any MigrationHandler]
    private let running: SharedValue<Bool>
    private let dirtyTracking: DirtyTrackingSession?

    init(
        identity: HandlerIdentity, switchoverAckEnabled: Bool, multifdTransfer: Bool = false, running: SharedValue<Bool>,
        parameters: MigrationParameters = MigrationParameters(), participants: [any MigrationHandler] = [],
        dirtyTracking: DirtyTrackingSession? = nil
    ) {
        self.dirtyTracking = dirtyTracking
        self.identity = identity
        self.switchoverAckEnabled = switchoverAckEnabled
        self.multifdTransfer = multifdTransfer
        self.running = running
        self.parameters = parameters
        self.participants = participants
    }

    var vmRunning: Bool { running.get }
    var dirtyMemory: DirtyMemoryLog? { dirtyTracking?.log }
}

/// The ``LoadContext`` the destination hands to each handler.
final class EngineLoadContext: LoadContext {
    let identity: HandlerIdentity
    let switchoverAckEnabled: Bool
    let multifdTransfer: Bool
    private let acks: DestinationAcks

    init(identity: HandlerIdentity, switchoverAckEnabled: Bool, multifdTransfer: Bool = false, acks: DestinationAcks) {
        self.identity = identity
        self.switchoverAckEnabled = switchoverAckEnabled
        self.multifdTransfer = multifdTransfer
        self.acks = acks
    }

    func approveSwitchover() throws { try acks.approve(identity) }
    func revokeSwitchover() throws { try acks.revoke(identity) }
}

/// The default logger: quiet.
func quietLogger() -> Logger {
    Logger(label: "switchover.migration", factory: { _ in SwiftLogNoOpLogHandler() })
}

/// Classifies an error thrown on a migration thread into a ``MigrationError``: the code
/// from the error's type, the phase from the engine.
func classify(
    _ error: any Error, phase: MigrationPhase, cancelled: Bool, handler: HandlerIdentity? = nil,
    section: SectionHeader? = nil, offset: Int? = nil, message: String? = nil
) -> MigrationError {
    if let e = error as? MigrationError {
        if cancelled, e.code == .cancelled || e.code == .invalidParameters { return e }
        if cancelled { return MigrationError(.cancelled, phase: e.phase, message: "cancelled", cause: e) }
        return e
    }
    if cancelled {
        return MigrationError(
            .cancelled, phase: phase, handler: handler, section: section, offset: offset,
            message: "cancelled", cause: error)
    }
    let code: MigrationError.Code
    switch error {
    case TransportError.timedOut: code = .stallTimeout
    case is TransportError: code = .transport
    case is StreamError: code = .malformedStream
    case is MultifdError: code = .multifdFailed
    case is ReturnPathError: code = .returnPath
    default: code = handler != nil ? .handlerFailed : .unknown
    }
    return MigrationError(
        code, phase: phase, handler: handler, section: section, offset: offset,
        message: message ?? defaultMessage(phase), cause: error)
}

private func defaultMessage(_ phase: MigrationPhase) -> String {
    switch phase {
    case .idle, .connecting: "could not connect"
    case .header: "the stream header could not be exchanged"
    case .setup: "setup failed"
    case .preflight: "the pre-flight check failed"
    case .iterating: "the live phase failed"
    case .completing: "the completion failed"
    case .finishing: "the destination's verdict did not arrive"
    case .loading: "the incoming stream could not be loaded"
    case .resuming: "the guest could not be resumed"
    case .completed, .failed, .cancelled: "failed"
    }
}

/// A byte source that adds up the time its reads block (on the engine's clock): the
/// destination's load time leaves out the time a handler waited for its section's bytes.
/// Used by one thread at a time.
final class TimedByteSource: ByteSource {
    private let base: any ByteSource
    private let clock: any MigrationClock
    private let watchdog: ReceiveWatchdog?
    /// Time spent inside `read` so far.
    private(set) var waited: Duration = .zero

    init(_ base: any ByteSource, clock: any MigrationClock, watchdog: ReceiveWatchdog? = nil) {
        (self.base, self.clock, self.watchdog) = (base, clock, watchdog)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let start = clock.now
        let realStart = ContinuousClock.now
        defer { waited += clock.now - start }
        let n = try base.read(into: buffer)
        try watchdog?.received(n, waited: ContinuousClock.now - realStart)
        return n
    }
}

/// The destination's defence against a peer that trickles bytes to keep a connection alive:
/// over each `window` of time spent waiting for the main stream (real time; the destination's
/// own work is not charged to the peer), the main stream and the multifd channels together
/// must have delivered `window` × `minimumRate` bytes. Multifd receive threads add their bytes
/// through ``add(_:)``; the main stream's reader checks in ``received(_:waited:)``.
final class ReceiveWatchdog: Sendable {
    private let window: Duration
    private let minimumBytes: UInt64
    private let minimumRate: UInt64
    private let state = Mutex(State())

    private struct State {
        var total: UInt64 = 0
        var windowStartTotal: UInt64 = 0
        var waitedInWindow: Duration = .zero
    }

    init(minimumRate: UInt64, window: Duration) {
        (self.window, self.minimumRate) = (window, minimumRate)
        let seconds = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        self.minimumBytes = UInt64(clamping: Double(minimumRate) * seconds)
    }

    /// Bytes that arrived on a multifd channel.
    func add(_ n: Int) {
        state.withLock { $0.total = [$0.total, UInt64(max(0, n))].saturatingSum }
    }

    /// The main stream's read returned `n` bytes after waiting `waited`.
    func received(_ n: Int, waited: Duration) throws {
        try state.withLock { s throws(MigrationError) in
            s.total = [s.total, UInt64(max(0, n))].saturatingSum
            s.waitedInWindow += waited
            guard s.waitedInWindow >= window else { return }
            let delivered = s.total - s.windowStartTotal
            guard delivered >= minimumBytes else {
                throw MigrationError(
                    .peerTooSlow, phase: .loading,
                    message: "the source delivered \(delivered) bytes in \(s.waitedInWindow) of waiting, fewer than the minimum of "
                        + "\(minimumRate) bytes per second (minimumReceiveRate): a peer that trickles bytes is cut off")
            }
            s.windowStartTotal = s.total
            s.waitedInWindow = .zero
        }
    }
}
