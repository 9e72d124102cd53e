import Logging
import MigrationStream

/// The destination's LOAD_BACKLOG sender (extensions, a source that asked for it): a thread
/// that asks every handler, every ``interval`` of real time, what it has received and not yet
/// loaded, and tells the source — while the load thread is busy inside a handler, which is
/// exactly when the source must know. Each report also carries how far the destination has
/// loaded the main stream. It sends a handler's figure while it is not zero and once when it
/// becomes zero, and a zero report when only the position moved.
final class DestinationBacklogReporter: Sendable {
    /// How often the handlers are asked: short beside a downtime limit, so the source's figure
    /// is never older than this (plus the link's latency).
    static let interval: Duration = .milliseconds(20)

    typealias Handler = (identity: HandlerIdentity, handler: any MigrationHandler, context: LoadContext)

    private let stopped = Monitor(false)
    private let ended = Monitor(false)

    /// Sends the first report at once (it tells the source that this destination reports: it
    /// arrives before the pre-flight answer), then starts the thread. `handlers` are the active
    /// handlers with their contexts; `position` is the main-stream offset loaded through.
    init(handlers: [Handler], returnPath: ReturnPathWriter, position: @escaping @Sendable () -> UInt64, logger: Logger) throws {
        guard let first = handlers.first else {
            ended.update { $0 = true }
            return
        }
        var initial = Self.Sent(count: handlers.count)
        try Self.tick(handlers, &initial, returnPath: returnPath, position: position(), force: first.identity)
        startThread(name: "switchover-backlog") { [stopped, ended, initial] in
            defer { ended.update { $0 = true } }
            var state = initial
            while stopped.wait(timeout: Self.interval, { $0 ? true : nil }) == nil {
                do {
                    try Self.tick(handlers, &state, returnPath: returnPath, position: position(), force: nil)
                } catch {
                    // The load thread sees the broken connection itself and fails the run.
                    logger.debug("a backlog report could not be sent: \(error)")
                    return
                }
            }
        }
    }

    private struct Sent: Sendable {
        var last: [LoadBacklog]
        var position: UInt64 = 0
        init(count: Int) { last = Array(repeating: .none, count: count) }
    }

    /// One round: a report per handler with a backlog (or whose backlog just ended); when none
    /// went out and the position moved (or `force`), a zero report for the first handler.
    private static func tick(
        _ handlers: [Handler], _ sent: inout Sent, returnPath: ReturnPathWriter, position: UInt64,
        force: HandlerIdentity?
    ) throws {
        var any = false
        for (i, item) in handlers.enumerated() {
            let backlog = item.handler.loadBacklog(context: item.context)
            guard backlog != .none || sent.last[i] != .none else { continue }
            sent.last[i] = backlog
            try returnPath.send(
                .loadBacklog(
                    LoadBacklogReport(
                        idstr: item.identity.idstr, instanceID: item.identity.instanceID,
                        bytes: backlog.bytes, expectedMicros: backlog.expectedMicros,
                        loadedThrough: position)))
            any = true
        }
        if !any, position != sent.position || force != nil, let first = handlers.first {
            try returnPath.send(
                .loadBacklog(
                    LoadBacklogReport(
                        idstr: first.identity.idstr, instanceID: first.identity.instanceID,
                        bytes: 0, expectedMicros: 0, loadedThrough: position)))
        }
        sent.position = position
    }

    /// Stops the thread; with `waiting`, waits (real time, at most 1 s) until it has ended —
    /// before the connection closes, never inside the downtime (a busy machine may take a while
    /// to schedule it). A report the thread is still making after SHUT is dropped by the writer.
    func stop(waiting: Bool = true) {
        stopped.update { $0 = true }
        guard waiting else { return }
        _ = ended.wait(timeout: .seconds(1)) { $0 ? true : nil }
    }
}
