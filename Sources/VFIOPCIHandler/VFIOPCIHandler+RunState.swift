import MigrationCore
import VFIO

/// A handler that migrates one VFIO device: what checks that span devices look at (a migration
/// with several devices without P2P is refused in `savePrepare`). ``VFIOPCIHandler`` and every
/// module built on it conform; a vendor handler written from scratch should too.
public protocol VFIODeviceHandler: MigrationHandler {
    /// The device the handler migrates.
    var device: any VFIOMigrationDevice { get }
}

extension VFIOPCIHandler: VFIODeviceHandler {}

// The device follows the guest's run state (QEMU hw/vfio/migration.c: vfio_vmstate_change_prepare
// and vfio_vmstate_change). Stop: PRE_COPY → PRE_COPY_P2P or RUNNING → RUNNING_P2P in the
// prepare phase, so no device starts peer-to-peer DMA while another is being stopped; then
// STOP_COPY at the switchover (or when the device was pre-copying), STOP otherwise. Start: the
// device reaches RUNNING_P2P in the prepare phase, RUNNING once all have. A device without P2P
// skips the prepare phase.
extension VFIOPCIHandler {
    public func prepareRunStateChange(_ change: VMRunStateChange) throws {
        guard try knownFlags().contains(.p2p) else { return }
        let current = try vfio("run state \(change): read the device state") { () throws(VFIOError) in try device.deviceState() }
        let target: VFIODeviceState? =
            switch (change.running, current) {
            case (false, .running): .runningP2P
            case (false, .preCopy): .preCopyP2P
            case (false, _): nil
            case (true, .running), (true, .preCopy), (true, .runningP2P): nil
            case (true, _): .runningP2P
            }
        guard let target else { return }
        if change.running {
            try startStep(target, change)
        } else {
            try vfio("run state \(change): enter \(target)") { () throws(VFIOError) in try device.setState(target) }
        }
    }

    public func runStateChanged(_ change: VMRunStateChange) throws {
        let current = try vfio("run state \(change): read the device state") { () throws(VFIOError) in try device.deviceState() }
        if change.running {
            guard current != .running, !current.isPreCopy else { return }
            try startStep(.running, change)
            return
        }
        // At the switchover (or a pause while pre-copying, as QEMU) the save session carries
        // on into STOP_COPY; any other stop is a plain STOP.
        let target: VFIODeviceState = change.reason == .switchover || current.isPreCopy ? .stopCopy : .stop
        guard current != target else { return }
        let opened = try vfio("run state \(change): enter \(target)") { () throws(VFIOError) in try device.setState(target) }
        state.withLock {
            if let opened { $0.dataFD = opened }
            if target == .stopCopy { $0.stopCopyEntered = true }
            $0.inPreCopy = false
        }
    }

    /// One arc of a start; a device that cannot run again is reset (RUNNING, its data fds
    /// disabled) and the error says so.
    private func startStep(_ target: VFIODeviceState, _ change: VMRunStateChange) throws {
        do {
            try device.setState(target)
        } catch {
            let reset: Result<Void, VFIOError> = Result { () throws(VFIOError) in try device.reset() }
            throw VFIOPCIHandlerError.startFailed(device: device.name, target: target, error, resetError: reset.failure)
        }
        state.withLock { $0.inPreCopy = false }
    }

    /// The migration flags probed by the last setup, or probed now (a run-state change outside
    /// a migration).
    private func knownFlags() throws -> VFIOMigrationFlags {
        let known = state.withLock { $0.flags }
        if !known.isEmpty { return known }
        return try vfio("run state: probe the migration flags") { () throws(VFIOError) in try device.migrationFlags() } ?? []
    }

    /// QEMU's `vfio_multiple_devices_migration_is_supported`: with more than one VFIO device in
    /// the migration, each must have P2P, else one may send peer-to-peer DMA into another
    /// whose state is being captured. ``MigrationParameters/allowDevicesWithoutP2P`` lifts it.
    func checkP2PBarrier(context: SaveContext) throws {
        guard !context.parameters.allowDevicesWithoutP2P else { return }
        let devices = context.participants.compactMap { ($0 as? any VFIODeviceHandler)?.device }
        guard devices.count > 1 else { return }
        var without: [String] = []
        for peer in devices {
            let flags = try vfio("save prepare: probe \(peer.name)") { () throws(VFIOError) in try peer.migrationFlags() }
            if flags?.contains(.p2p) != true { without.append(peer.name) }
        }
        guard without.isEmpty else {
            throw VFIOPCIHandlerError.multipleDevicesWithoutP2P(device: device.name, withoutP2P: without, devices: devices.count)
        }
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
