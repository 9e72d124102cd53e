import Logging
import MigrationStream

/// The destination's LOAD_BACKLOG sender (extensions, a source that asked for it): a thread
/// that asks every handler, every ``interval`` of real time, what it has received and not yet
/// loaded, and tells the source — while the load thread is busy inside a handler, which is
/// exactly when the source must know. It sends a handler's figure while it is not zero, and
/// once when it becomes zero.
final class DestinationBacklogReporter: Sendable {
    /// How often the handlers are asked: short beside a downtime limit, so the source's figure
    /// is never older than this (plus the link's latency).
    static let interval: Duration = .milliseconds(20)

    private let stopped = Monitor(false)
    private let ended = Monitor(false)

    /// Starts the thread. `handlers` are the active handlers with their contexts.
    init(handlers: [(identity: HandlerIdentity, handler: any MigrationHandler, context: LoadContext)],
         returnPath: ReturnPathWriter, logger: Logger) {
        let items = handlers
        startThread(name: "switchover-backlog") { [stopped, ended] in
            defer { ended.update { $0 = true } }
            var last = Array(repeating: LoadBacklog.none, count: items.count)
            while stopped.wait(timeout: Self.interval, { $0 ? true : nil }) == nil {
                for (i, item) in items.enumerated() {
                    let backlog = item.handler.loadBacklog(context: item.context)
                    guard backlog.expectedMicros > 0 || backlog.bytes > 0 || last[i] != .none else { continue }
                    last[i] = backlog
                    let report = LoadBacklogReport(idstr: item.identity.idstr, instanceID: item.identity.instanceID,
                                                   bytes: backlog.bytes, expectedMicros: backlog.expectedMicros)
                    do {
                        try returnPath.send(.loadBacklog(report))
                    } catch {
                        // The load thread sees the broken connection itself and fails the run.
                        logger.debug("a backlog report could not be sent: \(error)")
                        return
                    }
                }
            }
        }
    }

    /// Stops the thread and waits (real time, at most 1 s) until it has sent its last report:
    /// nothing follows the SHUT.
    func stop() {
        stopped.update { $0 = true }
        _ = ended.wait(timeout: .seconds(1)) { $0 ? true : nil }
    }
}
