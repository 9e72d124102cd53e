import Logging
import MigrationStream

/// The source's return-path reader: a thread that reads the destination's messages and
/// publishes them to the migration thread (QEMU `source_return_path_thread`).
final class SourceReturnPath: Sendable {
    struct State {
        /// The last PONG values, at most ``SourceReturnPath/maxPongs`` (a peer may send any number).
        var pongs: [UInt32] = []
        /// The destination's SHUT value, once it came.
        var shut: UInt32?
        /// Why the return path failed (not a SHUT): closed, malformed, unexpected message.
        var failure: (any Error)?
        var ended = false
        /// The QEMU-compatible single SWITCHOVER_ACK.
        var switchoverAcked = false
        /// ACK_STATE per handler (extensions): true = acknowledged now.
        var ackStates: [HandlerIdentity.Key: Bool] = [:]
        var everAcked: Set<HandlerIdentity.Key> = []
        var loadReports: [HandlerIdentity.Key: LoadReport] = [:]
        /// LOAD_BACKLOG per handler, with when it arrived (the engine's clock).
        var backlogs: [HandlerIdentity.Key: (report: LoadBacklogReport, at: Duration)] = [:]
        var preflightResult: (accepted: Bool, message: String)?
        /// The engine is tearing down: a read error is expected, not a failure.
        var stopping = false
    }

    /// The PONG values kept (the newest); the engine only ever asks whether one came.
    static let maxPongs = 16

    let state = Monitor(State())
    private let extensions: Bool
    /// The handlers this source migrates: a LOAD_REPORT or ACK_STATE may name only these, so
    /// what the destination can make us hold is bounded by our own registry.
    private let known: Set<HandlerIdentity.Key>
    private let logger: Logger
    private let clock: any MigrationClock

    init(extensions: Bool, known: Set<HandlerIdentity.Key>, clock: any MigrationClock, logger: Logger) {
        (self.extensions, self.known, self.clock, self.logger) = (extensions, known, clock, logger)
    }

    func start(reading connection: any MigrationConnection) {
        startThread(name: "switchover-return-path") { [self] in
            let reader = StreamReader(source: connection, bufferSize: 4096)
            while true {
                do {
                    let message = try reader.readReturnPathMessage()
                    if try handle(message) { break }
                } catch {
                    state.update { s in
                        if !s.stopping && s.shut == nil && s.failure == nil { s.failure = error }
                    }
                    break
                }
            }
            state.update { $0.ended = true }
        }
    }

    /// Applies one message; true when the reader should stop (SHUT).
    private func handle(_ message: ReturnPathMessage) throws -> Bool {
        logger.trace("return path: \(message)")
        switch message {
        case .shut(let value):
            state.update { $0.shut = value }
            return true
        case .pong(let value):
            state.update { s in
                if s.pongs.count >= Self.maxPongs { s.pongs.removeFirst(s.pongs.count - Self.maxPongs + 1) }
                s.pongs.append(value)
            }
        case .switchoverAck:
            state.update { $0.switchoverAcked = true }
        case .loadReport(let report) where extensions:
            let key = HandlerIdentity.Key(report.idstr, instanceID: report.instanceID)
            guard known.contains(key) else { throw ReturnPathError.unknownHandler("LOAD_REPORT", key.description) }
            state.update { $0.loadReports[key] = report }
        case .loadBacklog(let report) where extensions:
            let key = HandlerIdentity.Key(report.idstr, instanceID: report.instanceID)
            guard known.contains(key) else { throw ReturnPathError.unknownHandler("LOAD_BACKLOG", key.description) }
            let now = clock.now
            state.update { $0.backlogs[key] = (report, now) }
        case .ackState(let idstr, let instance, let acknowledged) where extensions:
            let key = HandlerIdentity.Key(idstr, instanceID: instance)
            guard known.contains(key) else { throw ReturnPathError.unknownHandler("ACK_STATE", key.description) }
            state.update { s in
                s.ackStates[key] = acknowledged
                if acknowledged { s.everAcked.insert(key) }
            }
        case .preflightResult(let accepted, let text) where extensions:
            state.update { $0.preflightResult = (accepted, text) }
        default:
            throw ReturnPathError.unexpected(ReturnPathMessage.name(of: message.type))
        }
        return false
    }

    /// Whether the source may switch over as far as the acknowledgement goes: QEMU's single
    /// ACK, and (extensions) no handler whose acknowledgement is currently withdrawn.
    var acknowledged: Bool {
        state.withLock { s in s.switchoverAcked && !s.ackStates.values.contains(false) }
    }

    func ackState(of key: HandlerIdentity.Key, ackEnabled: Bool) -> AckState {
        guard ackEnabled else { return .notNeeded }
        return state.withLock { s in
            guard extensions else { return .unknown }
            guard let acked = s.ackStates[key] else { return .notNeeded }
            if acked { return .acknowledged }
            return s.everAcked.contains(key) ? .revoked : .pending
        }
    }

    /// Stops treating read errors as failures (before shutting the connection down).
    func stop() { state.update { $0.stopping = true } }

    /// Waits (real time) for the reader thread to end; false on timeout.
    @discardableResult
    func join(timeout: Duration?) -> Bool {
        state.wait(timeout: timeout) { $0.ended ? true : nil } ?? false
    }
}

// MARK: What the source's phases wait for

extension SourceReturnPath {
    /// Throws when the return path says the migration is over: the destination's SHUT (a
    /// failure; a success before `.finishing` is early), or the return path failed.
    func checkNotEnded(phase: MigrationPhase, offset: Int) throws {
        let (shut, failure) = state.withLock { ($0.shut, $0.failure) }
        if let shut, shut != 0 { throw Self.destinationFailed(shut, phase: phase, offset: offset) }
        if shut != nil && phase != .finishing {
            throw MigrationError(.returnPath, phase: phase, message: "the destination ended the migration early (SHUT 0)")
        }
        if let failure {
            let closed = (failure as? StreamError).map { if case .truncated = $0 { true } else { false } } ?? false
            throw MigrationError(
                .returnPath, phase: phase,
                message: closed ? "the destination closed the connection without a verdict" : "the return path failed",
                cause: failure)
        }
    }

    /// Waits for the destination's answer to the pre-flight inventory: throws its refusal
    /// (before the SHUT(1) that follows it), a cancel, the end of the migration, or no answer
    /// within `timeout`.
    func awaitPreflightAnswer(timeout: Duration?, phase: MigrationPhase, offset: Int, cancelled: () -> Bool) throws {
        let answer = state.wait(timeout: timeout) { s -> (accepted: Bool, message: String)?? in
            if let r = s.preflightResult { return .some(r) }
            if s.ended || s.failure != nil || s.shut != nil || cancelled() { return .some(nil) }
            return nil
        }
        // The destination's refusal comes first, then its SHUT(1): report the refusal.
        if let answer = answer ?? nil, !answer.accepted {
            throw MigrationError(.incompatible, phase: phase, message: "the destination refused the migration: \(answer.message)")
        }
        if cancelled() { throw TransportError.shutDown }
        try checkNotEnded(phase: phase, offset: offset)
        guard let answer else {
            throw MigrationError(
                .stallTimeout, phase: phase,
                message: "no pre-flight answer from the destination within \(timeout.map { "\($0)" } ?? "-")")
        }
        guard answer != nil else {
            throw MigrationError(
                .returnPath, phase: phase, message: "the return path closed before the pre-flight answer",
                cause: ReturnPathError.closed)
        }
    }

    /// Waits for the destination's verdict on the whole stream (SHUT): throws unless it is 0.
    func awaitVerdict(timeout: Duration?, phase: MigrationPhase, offset: Int) throws {
        let verdict = state.wait(timeout: timeout) { s -> UInt32?? in
            if let shut = s.shut { return .some(shut) }
            if s.ended || s.failure != nil { return .some(nil) }
            return nil
        }
        guard let verdict else {
            throw MigrationError(
                .stallTimeout, phase: phase,
                message: "the destination did not report its result within \(timeout.map { "\($0)" } ?? "-")")
        }
        guard let shut = verdict else {
            let failure = state.withLock { $0.failure }
            throw MigrationError(
                .returnPath, phase: phase, message: "the return path closed before the destination's verdict",
                cause: failure ?? ReturnPathError.closed)
        }
        guard shut == 0 else { throw Self.destinationFailed(shut, phase: phase, offset: offset) }
    }

    static func destinationFailed(_ shut: UInt32, phase: MigrationPhase, offset: Int) -> MigrationError {
        MigrationError(.destinationFailed, phase: phase, offset: offset, message: "the destination reported failure (SHUT \(shut))")
    }
}

/// A return-path problem seen by the source.
enum ReturnPathError: Error, Sendable, CustomStringConvertible {
    case unexpected(String)
    case closed
    /// A message about a handler this source does not migrate.
    case unknownHandler(String, String)

    var description: String {
        switch self {
        case .unexpected(let name): "unexpected return-path message \(name) (postcopy and resume are not supported)"
        case .closed: "the return path closed before the destination's verdict"
        case .unknownHandler(let message, let handler): "\(message) names \(handler), which this source does not migrate"
        }
    }
}
