// The device lifecycle on the real kernel, with both mtty devices open in this process as two devices
// of one VM (issue 16):
//
//  - p2p-barrier-order: a VMRunState stop for the switchover, then a start, through the generic
//    handler: every device reaches RUNNING_P2P (read back from the kernel) before any is asked for
//    STOP_COPY, and again before any is asked for RUNNING; the vCPU stop comes first, the start last.
//  - adopt-open-device-fd: the source's device fd, already open, is adopted (no open: the process's
//    fd count does not change); the adopted device drives the same kernel device; closing it (borrowed)
//    leaves the original working; the container fd is refused as a device fd.

#if os(Linux)
import Glibc
import MigrationCore
import Synchronization
import SystemPackage
import VFIO
import VFIOPCIHandler

/// A device that records every state request, with the kernel's states of both devices just before it.
final class OrderRecordingDevice: VFIOMigrationDevice {
    let base: KernelVFIODevice

    init(_ base: KernelVFIODevice) { self.base = base }

    var name: String { base.name }
    func migrationFlags() throws(VFIOError) -> VFIOMigrationFlags? { try base.migrationFlags() }
    func deviceState() throws(VFIOError) -> VFIODeviceState { try base.deviceState() }
    func stopCopySize() throws(VFIOError) -> UInt64 { try base.stopCopySize() }
    func reset() throws(VFIOError) { try base.reset() }

    @discardableResult
    func setState(_ state: VFIODeviceState) throws(VFIOError) -> VFIOMigrationDataFD? {
        LifecycleChecks.record("\(name) \(state)")
        return try base.setState(state)
    }
}

enum LifecycleChecks {
    /// Requests and vCPU changes in the order they came, each with the kernel's states of both devices.
    private static let events = Mutex<[(what: String, states: [VFIODeviceState?])]>([])
    private static let watched = Mutex<[KernelVFIODevice]>([])

    static func record(_ what: String) {
        let devices = watched.withLock { $0 }
        let states = devices.map { try? $0.deviceState() }
        events.withLock { $0.append((what, states)) }
    }

    /// vCPUs that record their stop and start among the devices' requests.
    final class RecordingVCPUs: VMController {
        private let running = Mutex(true)
        var isRunning: Bool { running.withLock { $0 } }
        func stopVM() throws {
            running.withLock { $0 = false }
            LifecycleChecks.record("vCPUs stop")
        }
        func resumeVM() throws {
            running.withLock { $0 = true }
            LifecycleChecks.record("vCPUs start")
        }
    }

    static func run(source: KernelVFIODevice, destination: KernelVFIODevice, report: inout VFIOCheckReport) {
        report.run(KernelCheck.p2pBarrierOrder.name) { c in
            let devices = [source, destination]
            for device in devices where try device.deviceState() != .running {
                c.note("\(device.name) was \(try device.deviceState()): set to RUNNING first")
                try device.setState(.running)
            }
            watched.withLock { $0 = devices }
            events.withLock { $0.removeAll() }
            let registry = HandlerRegistry()
            let handlers = devices.map { VFIOPCIHandler(device: OrderRecordingDevice($0)) }
            for handler in handlers {
                try registry.register(handler, idstr: handler.identity.idstr, instanceID: 0, versionID: 1)
            }
            let runState = VMRunState(registry: registry, vcpus: RecordingVCPUs())
            try runState.stop(.switchover)
            let afterStop = devices.map { try? $0.deviceState() }
            try runState.start(.migrationFailed)
            let afterStart = devices.map { try? $0.deviceState() }
            for handler in handlers { handler.saveCleanup(succeeded: false) }
            let log = events.withLock { $0 }
            for event in log { c.note("\(event.what): kernel states \(event.states.map { $0.map { "\($0)" } ?? "?" })") }

            c.expectEqual(log.first?.what, "vCPUs stop", "the first event")
            c.expectEqual(log.last?.what, "vCPUs start", "the last event")
            c.expectEqual(afterStop, [.stopCopy, .stopCopy], "the states after the stop")
            c.expectEqual(afterStart, [.running, .running], "the states after the start")
            // The barrier: when the first device is asked for STOP_COPY, and when the first is asked
            // for RUNNING, the kernel has every device in RUNNING_P2P.
            for target in ["STOP_COPY", "RUNNING"] {
                guard let first = log.first(where: { $0.what.hasSuffix(" \(target)") }) else {
                    c.expect(false, "no request for \(target)")
                    continue
                }
                c.expectEqual(first.states, [.runningP2P, .runningP2P], "the kernel's states when \(first.what) was requested")
            }
            c.expectEqual(log.filter { $0.what.hasSuffix(" RUNNING_P2P") }.count, 4, "requests for RUNNING_P2P (two per device)")
            watched.withLock { $0.removeAll() }
        }

        report.run(KernelCheck.adoptOpenDeviceFD.name) { c in
            guard let fd = source.deviceFileDescriptor else { throw VFIOCheckAbort("the source device is closed") }
            let before = openFDCount()
            let adopted = try KernelVFIODevice.adopting(deviceFD: fd, name: source.name, iommu: source.iommu, ownership: .borrowed)
            c.expectEqual(openFDCount(), before, "open fds after the adoption (no second open)")
            c.expectEqual(adopted.openPath, .adopted, "the adopted device's open path")
            c.expectEqual(adopted.iommu, source.iommu, "the adopted device's container and group")
            c.expectEqual(try adopted.migrationFlags(), try source.migrationFlags(), "the migration flags")
            // The adopted device drives the same kernel device.
            try adopted.setState(.runningP2P)
            c.expectEqual(try source.deviceState(), .runningP2P, "the original's state after the adopted device's RUNNING_P2P")
            try adopted.setState(.running)
            c.expectEqual(try source.deviceState(), .running, "the original's state after the adopted device's RUNNING")
            try adopted.close()
            c.expectEqual(openFDCount(), before, "open fds after closing the borrowed device")
            c.expectEqual(try source.deviceState(), .running, "the original device after the adopted one was closed")
            // A container is no device: VFIO_DEVICE_GET_INFO refuses it, and nothing is closed.
            if case .container(let container, _) = source.iommu {
                let refused = c.expectError("adopting the container fd as a device fd") { () throws(VFIOError) in
                    try KernelVFIODevice.adopting(deviceFD: container, name: source.name, iommu: source.iommu)
                }
                if let refused { c.note("refused: \(refused)") }
                c.expectEqual(openFDCount(), before, "open fds after the refused adoption")
            }
        }
    }

    /// Entries of /proc/self/fd (one more for the directory being read, the same every time).
    private static func openFDCount() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while readdir(dir) != nil { count += 1 }
        return count
    }
}
#endif
