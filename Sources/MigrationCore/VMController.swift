/// The VMM's vCPUs: how a ``VMRunState`` stops and starts the guest itself.
///
/// The engines never call it directly: they change the run state through ``VMRunState``,
/// which stops the vCPUs before the devices (``VMRunState/stop(_:)``) and starts them after
/// the devices (``VMRunState/start(_:)``). The source stops the guest at the switchover (only
/// if ``isRunning``) and starts it again when a migration it stopped the guest for fails or is
/// cancelled; the destination starts it after a complete, successful stream (unless
/// ``MigrationParameters/resumeOnCompletion`` is off). The calls come from the thread that
/// changes the run state and block it: return once the vCPUs are stopped (or running).
public protocol VMController: AnyObject, Sendable {
    /// Whether the guest's vCPUs are running now.
    var isRunning: Bool { get }
    /// Stops the vCPUs (QEMU `pause_all_vcpus` in `vm_stop_force_state(RUN_STATE_FINISH_MIGRATE)`).
    /// Time spent here counts in the downtime.
    func stopVM() throws
    /// Starts the vCPUs (QEMU `resume_all_vcpus` in `vm_start`).
    func resumeVM() throws
}
