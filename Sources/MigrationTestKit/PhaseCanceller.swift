import MigrationCore
import MigrationStream
import Synchronization

/// A handler registered beside the device on both ends of a cancel check: it cancels the
/// source from inside the engine's own call as the source works in `phase`, so the cancel
/// always lands before the switchover and every run has a cancelled migration to check (a
/// cancel sent from the progress stream can arrive after the migration finished). It moves no
/// data: its sections have empty bodies.
final class PhaseCanceller: MigrationHandler {
    /// The handler's idstr on both ends.
    static let idstr = "switchover-conformance/cancel"

    private let phase: MigrationPhase
    private let cancel = Mutex<(@Sendable () -> Void)?>(nil)
    private let fired = Mutex(false)

    /// - Parameter phase: `.header` (in `savePrepare`), `.setup` (in `saveSetup`) or
    ///   `.iterating` (in the first `pendingEstimate`); other phases never fire.
    init(phase: MigrationPhase) { self.phase = phase }

    /// What to call to cancel (the source's ``MigrationSource/cancel()``).
    func arm(_ action: @escaping @Sendable () -> Void) { cancel.withLock { $0 = action } }

    /// Whether the cancel was sent.
    var hasFired: Bool { fired.withLock { $0 } }

    /// Cancels once, when `current` is the phase to cancel in.
    @discardableResult
    private func fire(in current: MigrationPhase) -> Bool {
        guard current == phase else { return false }
        let first = fired.withLock { f -> Bool in
            defer { f = true }
            return !f
        }
        if first { cancel.withLock { $0 }?() }
        return true
    }

    var isLive: Bool { true }
    var hasFullState: Bool { false }
    func savePrepare(context: SaveContext) throws { fire(in: .header) }
    func saveSetup(to writer: StreamWriter, context: SaveContext) throws { fire(in: .setup) }
    /// Once it has cancelled, a large figure keeps the engine iterating (where it sees the
    /// cancel) rather than switching over in the same pass.
    func pendingEstimate(context: SaveContext) -> PendingBytes {
        fire(in: .iterating) ? PendingBytes(mustPrecopy: 1 << 40) : .zero
    }
    func isActiveIterate(context: SaveContext) -> Bool { false }
    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {}
}
