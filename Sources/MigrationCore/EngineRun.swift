import Logging

/// What `SourceRun` and `DestinationRun` share: one migration on its engine's thread,
/// driven phase by phase, reporting each phase as progress.
protocol EngineRun: AnyObject {
    associatedtype Owner: EngineInternals
    var owner: Owner { get }
    var phase: MigrationPhase { get set }
    /// "source" or "destination", in the log.
    static var side: String { get }
    func emitProgress()
    /// Cleans up after `error` (handlers, the guest, the connection) and says what it was.
    func fail(_ error: any Error) -> MigrationError
}

extension EngineRun {
    // The engine's, which it holds for the run's lifetime.
    var params: MigrationParameters { owner.parameters }
    var clock: any MigrationClock { owner.clock }
    var logger: Logger { owner.logger }

    func enter(_ next: MigrationPhase) {
        phase = next
        logger.debug("\(Self.side) phase \(next)")
        emitProgress()
    }

    /// Runs `phases`, then returns `result()`; a failure goes through `fail(_:)` and is
    /// thrown as its ``MigrationError``. Either way the progress stream finishes last.
    func drive<Statistics>(_ phases: () throws -> Void, then result: () -> Statistics) throws -> Statistics {
        defer { owner.progressContinuation.finish() }
        do {
            try phases()
        } catch {
            throw fail(error)
        }
        return result()
    }
}
