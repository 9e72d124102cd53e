import Synchronization

/// A change of the VM's run state as handlers hear of it (QEMU's `vm_state_notify`).
public struct VMRunStateChange: Sendable, Hashable, CustomStringConvertible {
    /// Why the run state changes.
    public enum Reason: String, Sendable, Hashable, CustomStringConvertible {
        /// The source stops the guest for the switchover (QEMU `RUN_STATE_FINISH_MIGRATE`): a
        /// device stops and opens its remaining state for the END section.
        case switchover
        /// The source starts the guest again after a failed or cancelled migration.
        case migrationFailed
        /// The destination starts the guest after a complete incoming migration.
        case incomingMigration
        /// The VMM pauses or resumes the guest itself (QEMU `RUN_STATE_PAUSED`), e.g. to start
        /// a destination guest it kept paused (``MigrationParameters/resumeOnCompletion`` off).
        case vmm

        public var description: String { rawValue }
    }

    /// Whether the guest runs once the change is complete.
    public var running: Bool
    public var reason: Reason

    public init(running: Bool, reason: Reason) { (self.running, self.reason) = (running, reason) }

    /// The guest stops for `reason`.
    public static func stop(_ reason: Reason) -> Self { Self(running: false, reason: reason) }
    /// The guest starts for `reason`.
    public static func start(_ reason: Reason) -> Self { Self(running: true, reason: reason) }

    public var description: String { "\(running ? "start" : "stop") (\(reason))" }
}

/// Why a run-state change did not complete everywhere: each handler that failed, with its error.
public struct VMRunStateError: Error, Sendable, CustomStringConvertible {
    /// The change that was under way.
    public var change: VMRunStateChange
    /// Which phase failed: "prepare", "change" or "vCPUs".
    public var failures: [(handler: HandlerIdentity?, phase: String, error: any Error)]
    /// Whether the guest's vCPUs run now.
    public var vcpusRunning: Bool

    public var description: String {
        let each = failures.map { f in "\(f.handler.map { "\($0)" } ?? "the VMM") (\(f.phase)): \(f.error)" }
        return "the run-state change \(change) failed: " + each.joined(separator: "; ")
            + (vcpusRunning ? " (the vCPUs run)" : " (the vCPUs are stopped)")
    }
}

/// The VM's run state: the one place where the guest's vCPUs and every handler's device stop
/// and start together, as QEMU's `vm_stop`/`vm_start` with change-state handlers that have a
/// *prepare* callback.
///
/// Stopping (source switchover, or the VMM's own pause):
/// 1. the vCPUs stop (``VMController/stopVM()``), if they run;
/// 2. every active handler's ``MigrationHandler/prepareRunStateChange(_:)``, in reverse
///    emission order (a VFIO device enters RUNNING_P2P or PRE_COPY_P2P: it no longer
///    starts peer-to-peer DMA);
/// 3. only when all have returned, every handler's ``MigrationHandler/runStateChanged(_:)``
///    in the same order (a VFIO device enters STOP_COPY, or STOP).
///
/// Starting (destination after a migration, source after a failed one, the VMM's resume):
/// 1. every handler's prepare, in emission order (a VFIO device enters RUNNING_P2P);
/// 2. every handler's change (RUNNING);
/// 3. the vCPUs start (``VMController/resumeVM()``).
///
/// A stop halts at the first handler that fails (its phase is not finished for anyone) and
/// throws: the caller starts the VM again, and every handler is told. A start goes through
/// every handler whatever fails, then starts the vCPUs unless it is an incoming migration's
/// start, and throws a ``VMRunStateError`` naming each failure (a device that cannot run again
/// is reset, and its handler says so).
///
/// The engines drive it at the switchover and when they resume a guest; the VMM drives the
/// same object for its own pause and resume, so the devices always follow the vCPUs. Changes
/// are serialized; call it from any thread, never from inside a handler hook.
public final class VMRunState: Sendable {
    /// The handlers told of each change (their registration at the time of the change).
    public let registry: HandlerRegistry
    /// The guest's vCPUs.
    public let vcpus: any VMController
    private let serial = Mutex<Void>(())

    /// - Parameters:
    ///   - registry: the handlers whose devices follow the guest.
    ///   - vcpus: stops and starts the guest's vCPUs.
    public init(registry: HandlerRegistry, vcpus: any VMController) { (self.registry, self.vcpus) = (registry, vcpus) }

    /// Whether the guest's vCPUs run now.
    public var isRunning: Bool { vcpus.isRunning }

    /// Stops the guest: the vCPUs, then the P2P barrier across all handlers, then every handler.
    /// - Returns: whether this call stopped the vCPUs (false when they were stopped already).
    /// - Throws: ``VMRunStateError`` at the first failure; the vCPUs then stay stopped and the
    ///   caller should ``start(_:)`` the VM again.
    @discardableResult
    public func stop(_ reason: VMRunStateChange.Reason = .vmm) throws -> Bool {
        let change = VMRunStateChange.stop(reason)
        return try serial.withLock { _ throws(VMRunStateError) -> Bool in
            var stopped = false
            if vcpus.isRunning {
                do {
                    try vcpus.stopVM()
                } catch {
                    throw VMRunStateError(change: change, failures: [(nil, "vCPUs", error)], vcpusRunning: vcpus.isRunning)
                }
                stopped = true
            }
            let handlers = activeHandlers.reversed()
            for (identity, handler) in handlers {
                do { try handler.prepareRunStateChange(change) } catch {
                    throw VMRunStateError(change: change, failures: [(identity, "prepare", error)], vcpusRunning: vcpus.isRunning)
                }
            }
            for (identity, handler) in handlers {
                do { try handler.runStateChanged(change) } catch {
                    throw VMRunStateError(change: change, failures: [(identity, "change", error)], vcpusRunning: vcpus.isRunning)
                }
            }
            return stopped
        }
    }

    /// Starts the guest: every handler prepares, then every handler runs, then the vCPUs start.
    /// - Throws: ``VMRunStateError`` naming every handler that failed. For
    ///   ``VMRunStateChange/Reason/incomingMigration`` the vCPUs then stay stopped (the
    ///   destination fails the migration and the source keeps its guest); otherwise they start
    ///   anyway: the guest runs without the devices that failed.
    public func start(_ reason: VMRunStateChange.Reason = .vmm) throws {
        let change = VMRunStateChange.start(reason)
        try serial.withLock { _ throws(VMRunStateError) in
            var failures: [(handler: HandlerIdentity?, phase: String, error: any Error)] = []
            let handlers = activeHandlers
            var failed = Set<Int>()
            for (i, (identity, handler)) in handlers.enumerated() {
                do { try handler.prepareRunStateChange(change) } catch {
                    failures.append((identity, "prepare", error))
                    failed.insert(i)
                }
            }
            // A handler whose prepare failed has already given up (and reset its device):
            // only the others are told to run.
            for (i, (identity, handler)) in handlers.enumerated() where !failed.contains(i) {
                do { try handler.runStateChanged(change) } catch { failures.append((identity, "change", error)) }
            }
            if failures.isEmpty || reason != .incomingMigration {
                do { try vcpus.resumeVM() } catch { failures.append((nil, "vCPUs", error)) }
            }
            if !failures.isEmpty { throw VMRunStateError(change: change, failures: failures, vcpusRunning: vcpus.isRunning) }
        }
    }

    private var activeHandlers: [(HandlerIdentity, any MigrationHandler)] {
        registry.entries.filter { $0.handler.isActive }.map { ($0.identity, $0.handler) }
    }
}
