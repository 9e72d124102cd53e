import MigrationCore
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// The example VM's device DMA: the devices whose spec has `dma=` write guest RAM while the guest
/// runs, through the simulator's IOMMU path, as a passthrough NIC writes received packets.
///
/// The machine maps its RAM into a simulated type1 container (IOVA = guest-physical address,
/// vaddr = the block's host memory), installs a memory accessor that writes under GuestRAM's
/// lock (so device writes do not race the RAM handler's page copies), and attaches the devices:
/// each DMA write goes through the container's mappings and is logged by every tracker that runs
/// (the device's DMA log, the container's `VFIO_IOMMU_DIRTY_PAGES`). Devices whose spec says
/// `dma-tracking=none` get a container of their own without the migration capability.
/// The writes are driven from the guest workload's thread (``GuestWorkload``), so none lands
/// after the vCPUs stop, which is before any device stops.
struct ExampleMachineDMA: Sendable {
    /// The containers (closed at shutdown).
    let containers: [SimulatedVFIOContainer]
    /// What the source's engine tracks: the DMA-writing devices and guest RAM.
    let tracking: DirtyTrackingConfiguration

    /// Sets up DMA for `devices` whose spec has a `dma=` rate; none on a destination (its guest
    /// does not run during the migration).
    init(devices: [ExampleDevice], vm: ExampleVM, role: ExampleMachine.Role) throws {
        let dmaDevices = devices.filter { $0.spec.dmaBytesPerSecond > 0 }
        guard role == .source, !dmaDevices.isEmpty else {
            containers = []
            tracking = .none
            return
        }
        let ram = vm.ram
        var containers: [SimulatedVFIOContainer] = []
        var writers: [any DMAWritingDevice] = []
        for untracked in [false, true] {
            let group = dmaDevices.filter { ($0.spec.effectiveDMATracking == .none) == untracked }
            guard !group.isEmpty else { continue }
            let container = try SimulatedVFIOContainer(migrationCapability: !untracked)
            containers.append(container)
            guard let type1 = container.container else {
                throw VFIOError.unexpectedReply(operation: .write, device: "container", detail: "closed while being set up")
            }
            container.setMemoryAccessor { hostAddress, bytes in
                _ = bytes.withUnsafeBytes { ram.dmaWrite(hostAddress: UInt(hostAddress), bytes: $0) }
            }
            for (range, host) in zip(ram.guestRanges, ram.hostRanges) {
                try type1.mapDMA(iova: range.start, hostAddress: UInt64(host.base), size: UInt64(host.length))
            }
            let tracker = VFIOType1DirtyTracker(container: type1)
            for device in group {
                container.attach(device.device)
                writers.append(makeDMAWritingDevice(device.device, container: type1, tracker: tracker))
                let simulated = device.device
                vm.workload.addDeviceDMA(name: device.name, pagesPerSecond: device.spec.dmaPagesPerSecond) { address, seed in
                    try simulated.dmaWrite(iova: address, bytes: Self.page(seed: seed))
                }
            }
        }
        self.containers = containers
        tracking = DirtyTrackingConfiguration(devices: writers, ranges: ram.guestRanges, pageSize: UInt64(GuestRAM.pageSize))
    }

    /// The content a device writes into a page: a xorshift sequence from `seed`.
    static func page(seed: UInt64) -> [UInt8] {
        var x = seed | 1
        var bytes = [UInt8](repeating: 0, count: GuestRAM.pageSize)
        bytes.withUnsafeMutableBytes { buffer in
            for i in 0..<(GuestRAM.pageSize / 8) {
                x ^= x << 13
                x ^= x >> 7
                x ^= x << 17
                buffer.storeBytes(of: x, toByteOffset: i * 8, as: UInt64.self)
            }
        }
        return bytes
    }

    func close() {
        for container in containers { container.close() }
    }
}

/// A simulated device as the engine sees a DMA writer (VFIOPCIHandler's adapter, as for a kernel
/// device): its DMA log, and `tracker` — one object per container, shared by its devices — when
/// GET_INFO says the container tracks dirty pages.
private func makeDMAWritingDevice(
    _ device: SimulatedVFIODevice, container: VFIOType1Container, tracker: VFIOType1DirtyTracker
) -> any DMAWritingDevice {
    VFIODMADevice(client: device, name: device.name) { () throws(VFIOError) in
        guard try container.info().migration != nil else {
            return (nil, "\(container.name) has no migration capability in VFIO_IOMMU_GET_INFO")
        }
        return (tracker, "")
    }
}
