/// The VMM's side of a migration: how the engine stops and resumes the guest.
///
/// The source calls ``stopVM()`` at the switchover (only if ``isRunning``) and ``resumeVM()``
/// when a migration it stopped the guest for fails or is cancelled; the destination calls
/// ``resumeVM()`` after a complete, successful stream (unless
/// ``MigrationParameters/resumeOnCompletion`` is off). The calls come from the migration
/// thread and block it: return once the guest's vCPUs are stopped (or running).
public protocol VMController: AnyObject, Sendable {
    /// Whether the guest's vCPUs are running now.
    var isRunning: Bool { get }
    /// Stops the guest (QEMU `vm_stop_force_state(RUN_STATE_FINISH_MIGRATE)`). Time spent here
    /// counts in the downtime.
    func stopVM() throws
    /// Starts the guest again (QEMU `vm_start`).
    func resumeVM() throws
}
