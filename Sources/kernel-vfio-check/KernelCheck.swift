// kernel-vfio-check's own checks, by name. What each one proves, and where its evidence comes from (the
// kernel, or our own code), is in docs/kernel-test.md, one table row per check; KernelHarnessTests fails
// when a check here or in VFIOBehaviourChecks has no row there, or a row names no check.
//
// To add a check: a case here, `report.run(KernelCheck.<case>.name)` where it runs, a row in the docs.

/// A check kernel-vfio-check runs itself, in the order it runs them. (The behaviour checks between
/// group-container-path and migration-prepare are VFIOBehaviourChecks'.)
enum KernelCheck: String, CaseIterable {
    // The devices (main.swift).
    case openDevices = "open-devices"
    case groupContainerPath = "group-container-path"
    // The device lifecycle (LifecycleChecks.swift).
    case p2pBarrierOrder = "p2p-barrier-order"
    case adoptOpenDeviceFD = "adopt-open-device-fd"
    // Dirty tracking (DirtyTrackingChecks.swift).
    case dmaLoggingAnswer = "dma-logging-answer"
    case type1DirtyTracking = "type1-dirty-tracking"
    case dirtyTrackingChoice = "dirty-tracking-choice"
    // The migration (MigrationRun.swift, the parent; MigrationRoles.swift, the two children).
    case migrationPrepare = "migration-prepare"
    case migrationTwoProcesses = "migration-two-processes"
    case migrationSourceOpen = "migration-source-open"
    case migrationSource = "migration-source"
    case migrationSourceReadback = "migration-source-readback"
    case migrationDestinationOpen = "migration-destination-open"
    case migrationDestination = "migration-destination"
    case migrationDestinationReadback = "migration-destination-readback"
    case migrationReadbackMatchesSource = "migration-readback-matches-source"
    case migrationConfigStateRestored = "migration-config-state-restored"

    /// The name on its PASS/FAIL line.
    var name: String { rawValue }
}
