import Foundation
import MigrationCore
import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOPCIHandler
@testable import VFIOSimulator

/// Page-aligned guest memory for the adapter tests.
private final class GuestPages: @unchecked Sendable {  // written by the simulated DMA on the test's thread only
    let pointer: UnsafeMutableRawPointer
    let size: Int

    init(pages: Int) {
        size = pages * 4096
        pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    }

    deinit { pointer.deallocate() }
    var address: UInt64 { UInt64(UInt(bitPattern: pointer)) }
}

@Suite("VFIO dirty tracking as MigrationCore trackers: the offer, each kind, the choice")
struct VFIODirtyTrackingAdapterTests {
    static let base: UInt64 = 0x4000_0000
    static let ram = GuestMemoryRange(start: base, length: 32 * 4096)

    /// Devices attached to one container holding the guest memory.
    private static func machine(
        _ configurations: [SimulatedVFIOConfiguration], migrationCapability: Bool = true
    ) throws -> (devices: [SimulatedVFIODevice], adapters: [VFIODMADevice], container: SimulatedVFIOContainer, memory: GuestPages) {
        let memory = GuestPages(pages: 32)
        let container = try SimulatedVFIOContainer(migrationCapability: migrationCapability)
        let type1 = try #require(container.container)
        try type1.mapDMA(iova: base, hostAddress: memory.address, size: UInt64(memory.size))
        var devices: [SimulatedVFIODevice] = []
        var adapters: [VFIODMADevice] = []
        for configuration in configurations {
            let device = try SimulatedVFIODevice(configuration)
            container.attach(device)
            devices.append(device)
            adapters.append(
                VFIODMADevice(
                    client: device, name: device.name, iommu: { () throws(VFIOError) in try VFIOType1DirtyTracker.offer(for: type1) }))
        }
        return (devices, adapters, container, memory)
    }

    @Test("Device DMA logging: offered by PROBE, chosen when every device has it, reports what the device wrote")
    func deviceLogging() throws {
        let m = try Self.machine([.mtty(name: "mtty-a"), .mtty(name: "mtty-b")])
        defer { m.container.close() }
        let plan = try #require(try DirtyTrackingPlan.choose(for: m.adapters, ranges: [Self.ram], allowUntrackedDMA: false))
        #expect(plan.kind == .deviceDMALogging)
        #expect(plan.trackers.map(\.trackerName) == ["mtty-a", "mtty-b"])
        for tracker in plan.trackers { try tracker.startTracking(ranges: [Self.ram], pageSize: 4096) }
        try m.devices[1].dmaWrite(iova: Self.base + 7 * 4096 + 1, bytes: [1, 2, 3])
        let pages = try plan.trackers.flatMap { try $0.collectDirtyPages() }
        var dirty: [UInt64] = []
        for bitmap in pages { bitmap.forEachDirtyPage { dirty.append($0) } }
        #expect(dirty == [Self.base + 7 * 4096])
        #expect(try plan.trackers.flatMap { try $0.collectDirtyPages() }.map(\.dirtyPageCount).reduce(0, +) == 0)
        for tracker in plan.trackers {
            tracker.stopTracking()
            tracker.stopTracking()  // idempotent
        }
        #expect(m.devices.allSatisfy { !$0.isDMALoggingActive })
    }

    @Test("IOMMU tracking: chosen when one device lacks logging; one tracker for the container; folded to the VMM's page size")
    func type1Tracking() throws {
        let m = try Self.machine([.mtty(name: "mtty-a"), .opaque(name: "0000:5e:00.1")])
        defer { m.container.close() }
        let plan = try #require(try DirtyTrackingPlan.choose(for: m.adapters, ranges: [Self.ram], allowUntrackedDMA: false))
        #expect(plan.kind == .iommu)
        #expect(plan.trackers.count == 1)
        #expect(plan.reasons.count == 1 && plan.reasons[0].contains("0000:5e:00.1"))
        let offers = try m.adapters.map { try $0.dirtyTrackingOffer() }
        #expect(offers[0].iommu === offers[1].iommu)
        let tracker = plan.trackers[0]
        try tracker.startTracking(ranges: [Self.ram], pageSize: 8192)
        try m.devices[1].dmaWrite(iova: Self.base + 5 * 4096, bytes: [9])
        let bitmaps = try tracker.collectDirtyPages()
        #expect(bitmaps.count == 1 && bitmaps[0].pageSize == 8192)
        var dirty: [UInt64] = []
        bitmaps[0].forEachDirtyPage { dirty.append($0) }
        #expect(dirty == [Self.base + 4 * 4096])
        tracker.stopTracking()
    }

    @Test("Neither: the engine refuses, naming the device and the kernel's answers")
    func neither() throws {
        let m = try Self.machine([.opaque(name: "0000:5e:00.1")], migrationCapability: false)
        defer { m.container.close() }
        let offer = try m.adapters[0].dirtyTrackingOffer()
        #expect(offer.deviceLogging == nil && offer.iommu == nil)
        let reason = try #require(offer.unavailableReason)
        #expect(reason.hasPrefix("0000:5e:00.1: "))
        #expect(reason.contains("Inappropriate ioctl for device") && reason.contains("no migration capability"))
        #expect(throws: MigrationError.self) {
            _ = try DirtyTrackingPlan.choose(for: m.adapters, ranges: [Self.ram], allowUntrackedDMA: false)
        }
    }

    @Test("A device whose REPORT always fails (Debian 6.12) fails at start, and its log is stopped again")
    func reportFailsAtStart() throws {
        var debian = SimulatedVFIOConfiguration.mtty(name: "mtty-debian")
        debian.dmaLoggingReportFailure = .notSupported
        let m = try Self.machine([debian])
        defer { m.container.close() }
        let logging = try #require(try m.adapters[0].dirtyTrackingOffer().deviceLogging)
        #expect(throws: VFIOError.syscallFailed(operation: .reportDMALogging, device: "mtty-debian", errno: .notSupported)) {
            try logging.startTracking(ranges: [Self.ram], pageSize: 4096)
        }
        #expect(!m.devices[0].isDMALoggingActive)
    }

    @Test("A range the kernel cannot log is refused before START (page size, overflow)")
    func badRanges() throws {
        let m = try Self.machine([.mtty()])
        defer { m.container.close() }
        let logging = try #require(try m.adapters[0].dirtyTrackingOffer().deviceLogging)
        #expect(throws: VFIOError.self) { try logging.startTracking(ranges: [Self.ram], pageSize: 3000) }
        #expect(throws: VFIOError.self) {
            try logging.startTracking(ranges: [GuestMemoryRange(start: .max - 10, length: 100)], pageSize: 4096)
        }
        #expect(!m.devices[0].isDMALoggingActive)
    }

    @Test("iommufd: a kernel device opened through its cdev offers its dirty-tracking HWPT")
    func iommufd() throws {
        let host = SimulatedVFIOHost(cdevSupport: true)
        var configuration = SimulatedVFIOConfiguration.opaque()
        configuration.iommuDirtyTracking = true
        let driver = host.addDevice(
            .pci("0000:5e:00.1"), group: 3, cdevIndex: 0, configuration: configuration, clock: ManualSimulationClock())
        let device = try KernelVFIODevice.open(.pci("0000:5e:00.1"), access: .cdev, paths: host.paths, system: host)
        let memory = GuestPages(pages: 32)
        guard case .cdev(_, let ioas) = device.openPath else {
            Issue.record("not opened through the cdev")
            return
        }
        try #require(device.iommufd).mapIOAS(ioas, iova: Self.base, hostAddress: memory.address, length: UInt64(memory.size))
        let adapter = VFIODMADevice(device)
        let offer = try adapter.dirtyTrackingOffer()
        #expect(offer.deviceLogging == nil)
        let tracker = try #require(offer.iommu)
        #expect(tracker is VFIOIOMMUFDDirtyTracker)
        #expect(try adapter.dirtyTrackingOffer().iommu === tracker)
        try tracker.startTracking(ranges: [Self.ram], pageSize: 4096)
        _ = driver.dmaWrite(iova: Self.base + 31 * 4096, bytes: [1])
        var dirty: [UInt64] = []
        for bitmap in try tracker.collectDirtyPages() { bitmap.forEachDirtyPage { dirty.append($0) } }
        #expect(dirty == [Self.base + 31 * 4096])
        tracker.stopTracking()
    }
}

/// The simulated kernel, with the migration capability of its GET_INFO answer (at offset 24 of
/// the second, full call) rewritten: `pgsize_bitmap` at 40, `max_dirty_bitmap_size` at 48.
private struct CapabilityRewritingSyscalls: VFIOForwardingSyscalls {
    let base = VFIOSystem.simulated
    let pageSizeBitmap: UInt64
    let maxDirtyBitmapSize: UInt64

    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        let result = base.ioctl(fd, request, argument)
        if request == VFIOUAPI.iommuGetInfo, case .buffer(let buffer) = argument, buffer.count >= 56 {
            for i in 0..<8 {
                buffer[40 + i] = UInt8(truncatingIfNeeded: pageSizeBitmap >> (8 * UInt64(i)))
                buffer[48 + i] = UInt8(truncatingIfNeeded: maxDirtyBitmapSize >> (8 * UInt64(i)))
            }
        }
        return result
    }
}

@Suite("A type1 container's migration capability is the kernel's word: checked before tracking starts")
struct VFIOType1CapabilityTests {
    static let ram = GuestMemoryRange(start: 0x4000_0000, length: 32 * 4096)

    /// (pgsize_bitmap, max_dirty_bitmap_size) answers to refuse.
    static let hostile: [(UInt64, UInt64)] = [
        // Found by fuzz-vfio-replies: a 2^48-byte page widened the range to 2^48 bytes, and its
        // bitmap folded at 4 KiB asked for 8 GiB.
        (1 << 48, 256 << 20), (1 << 62, 256 << 20), (2 << 30, 256 << 20),
        // A 1-byte page: billions of pages for a small guest.
        (1, 256 << 20),
        // No range fits a bitmap of 0 bytes: every collect would have reported nothing dirty.
        (4096, 0), (4096, 7)
    ]

    private static func tracker(pageSizeBitmap: UInt64, maxDirtyBitmapSize: UInt64) throws -> (
        SimulatedVFIOContainer, VFIOType1DirtyTracker
    ) {
        let owner = try SimulatedVFIOContainer()
        let system = CapabilityRewritingSyscalls(pageSizeBitmap: pageSizeBitmap, maxDirtyBitmapSize: maxDirtyBitmapSize)
        let container = VFIOType1Container(fileDescriptor: try #require(owner.fileDescriptor), system: system)
        return (owner, VFIOType1DirtyTracker(container: container))
    }

    @Test(
        "A page size outside 4 KiB…1 GiB or a bitmap limit under 8 bytes is refused", arguments: VFIOType1CapabilityTests.hostile)
    func refused(pageSizeBitmap: UInt64, maxDirtyBitmapSize: UInt64) throws {
        let (owner, tracker) = try Self.tracker(pageSizeBitmap: pageSizeBitmap, maxDirtyBitmapSize: maxDirtyBitmapSize)
        defer { owner.close() }
        #expect(throws: VFIOError.self) { try tracker.startTracking(ranges: [Self.ram], pageSize: 4096) }
        #expect(try tracker.collectDirtyPages().isEmpty)
        tracker.stopTracking()
    }

    @Test("Linux's capability (4 KiB pages, 256 MiB bitmaps) and a 1 GiB page are accepted", arguments: [UInt64(4096), 1 << 30])
    func accepted(pageSizeBitmap: UInt64) throws {
        let (owner, tracker) = try Self.tracker(pageSizeBitmap: pageSizeBitmap, maxDirtyBitmapSize: 256 << 20)
        defer { owner.close() }
        // START succeeds (GET_BITMAP needs mappings, which this container has none of).
        try tracker.startTracking(ranges: [Self.ram], pageSize: 4096)
        tracker.stopTracking()
    }
}
