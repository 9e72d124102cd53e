import ExampleVM
import MigrationCore
import Synchronization
import Testing

/// Guest memory written by device DMA during a migration: lost without tracking, arriving with
/// each kind of tracking, refused when nothing can track it (issue #17). The devices here are
/// in-memory (DirtyTrackingSupport.swift); the simulated VFIO devices' own DMA runs in the
/// example machine's tests.
@Suite struct DirtyTrackingTests {
    private static func logs(_ count: Int) -> [(log: MemoryTracker?, iommu: MemoryTracker?)] {
        (0..<count).map { (MemoryTracker(kind: .deviceDMALogging, name: "log \($0)"), nil) }
    }

    @Test func withoutTrackingTheDestinationMissesThePagesDevicesWrote() async throws {
        let rig = try DMAMigrationRig(trackers: Self.logs(1), registerDevices: false)
        let (outgoing, incoming) = await rig.run()
        let statistics = try outgoing.get()
        #expect(incoming == nil)
        #expect(statistics.dirtyTracking == nil)
        #expect(rig.devices[0].pagesWritten > 0)
        // The danger: the migration "succeeds" and the destination runs on other RAM.
        #expect(rig.destinationVM.ram.digest() != rig.sourceVM.ram.digest())
    }

    @Test func withDeviceDMALoggingRAMArrivesIdentical() async throws {
        let trackers = Self.logs(2)
        let rig = try DMAMigrationRig(trackers: trackers)
        let (outgoing, incoming) = await rig.run()
        let statistics = try outgoing.get()
        #expect(incoming == nil)
        #expect(rig.devices.allSatisfy { $0.pagesWritten > 0 })
        #expect(rig.destinationVM.ram.digest() == rig.sourceVM.ram.digest())
        let tracking = try #require(statistics.dirtyTracking)
        #expect(tracking.kind == .deviceDMALogging)
        #expect(tracking.trackers == ["log 0", "log 1"])
        #expect(tracking.pagesPerSync.reduce(0, +) > 0)
        // The burst written as the devices stopped: only the final sync sees it.
        #expect((tracking.finalSyncPages ?? 0) > 0)
    }

    @Test func withIOMMUTrackingRAMArrivesIdenticalAndOneContainerIsOneTracker() async throws {
        let container = MemoryTracker(kind: .iommu, name: "type1 container")
        // The second device also has a DMA log, the first has none: IOMMU tracking for both.
        let rig = try DMAMigrationRig(trackers: [(nil, container), (MemoryTracker(kind: .deviceDMALogging, name: "log"), container)])
        let (outgoing, incoming) = await rig.run()
        let statistics = try outgoing.get()
        #expect(incoming == nil)
        #expect(rig.destinationVM.ram.digest() == rig.sourceVM.ram.digest())
        let tracking = try #require(statistics.dirtyTracking)
        #expect(tracking.kind == .iommu)
        #expect(tracking.trackerCount == 1)
        #expect(container.counts.starts == 1)
        #expect((tracking.finalSyncPages ?? 0) > 0)
        #expect(tracking.reasons.count == 1 && tracking.reasons[0].contains("0000:00:01.0"))
    }

    @Test func withNeitherTheMigrationIsRefusedBeforeAnyByteIsSent() async throws {
        let rig = try DMAMigrationRig(trackers: [(MemoryTracker(kind: .deviceDMALogging, name: "log"), nil), (nil, nil)])
        let (outgoing, _) = await rig.run()
        let error = try #require(throws: MigrationError.self) { try outgoing.get() }
        #expect(error.code == .dirtyTrackingUnavailable)
        #expect(error.message.contains("0000:00:02.0"))
        #expect(rig.sourceEnd.bytesWritten == 0)
        #expect(rig.devices.allSatisfy { $0.pagesWritten == 0 })
        // Nothing was left started.
        #expect(!(rig.devices[0].log?.isTracking ?? true))
        #expect(rig.devices[0].log?.counts.starts == 0)
    }

    @Test func withTheOptInEverythingMappedCountsAsDirty() async throws {
        var parameters = DMAMigrationRig.parameters
        parameters.allowUntrackedDMA = true
        let rig = try DMAMigrationRig(trackers: [(nil, nil)], parameters: parameters)
        let (outgoing, incoming) = await rig.run()
        let statistics = try outgoing.get()
        #expect(incoming == nil)
        #expect(rig.destinationVM.ram.digest() == rig.sourceVM.ram.digest())
        let tracking = try #require(statistics.dirtyTracking)
        #expect(tracking.kind == .allMappedDirty)
        // Every page of the 1 MiB counts at every sync.
        #expect(tracking.pagesPerSync.allSatisfy { $0 == 256 })
        #expect(tracking.finalSyncPages == 256)
        #expect(tracking.reasons.first?.contains("0000:00:01.0") == true)
    }

    @Test func trackingStopsWhenTheMigrationSucceeds() async throws {
        let trackers = Self.logs(1)
        let rig = try DMAMigrationRig(trackers: trackers)
        _ = try await rig.run().source.get()
        let log = try #require(trackers[0].log)
        #expect(!log.isTracking)
        #expect(log.counts.starts == 1 && log.counts.stops == 1)
    }

    @Test func trackingStopsWhenTheMigrationFails() async throws {
        let trackers = Self.logs(1)
        // The connection breaks after 100 KiB (of about 450): in the middle of the RAM's first pass.
        let rig = try DMAMigrationRig(trackers: trackers, cutAt: 100 << 10)
        let error = try await #require(throws: MigrationError.self) { try await rig.run().source.get() }
        #expect(error.code != .cancelled)
        let log = try #require(trackers[0].log)
        #expect(log.counts.collects > 0, "tracking ran before the failure")
        #expect(!log.isTracking)
        #expect(log.counts.starts == 1 && log.counts.stops == 1)
    }

    @Test func trackingStopsWhenTheMigrationIsCancelled() async throws {
        let trackers = Self.logs(1)
        let box = Mutex<MigrationSource?>(nil)
        let rig = try DMAMigrationRig(trackers: trackers) { pass in
            if pass == 3 { box.withLock { $0 }?.cancel() }
        }
        box.withLock { $0 = rig.source }
        defer { box.withLock { $0 = nil } }  // a device the source's registry holds keeps the box: break the cycle
        let error = try await #require(throws: MigrationError.self) { try await rig.run().source.get() }
        #expect(error.code == .cancelled)
        let log = try #require(trackers[0].log)
        #expect(!log.isTracking)
        #expect(log.counts.starts == 1 && log.counts.stops == 1)
    }

    @Test func aSourceWhoseHandlersNeverMakeTheFinalSyncFailsBeforeEOF() async throws {
        // No RAM handler reads SaveContext.dirtyMemory.
        let rig = try DMAMigrationRig(trackers: Self.logs(1), withRAM: false)
        let error = try await #require(throws: MigrationError.self) { try await rig.run().source.get() }
        #expect(error.code == .dirtyTrackingUnavailable)
        #expect(error.message.contains("final sync"))
        #expect(!(rig.devices[0].log?.isTracking ?? true))
    }
}

/// The choice alone, as QEMU makes it.
@Suite struct DirtyTrackingChoiceTests {
    final class Offering: DMAWritingDevice {
        let dmaDeviceName: String
        let offer: DirtyTrackingOffer?
        init(_ name: String, _ offer: DirtyTrackingOffer?) {
            dmaDeviceName = name
            self.offer = offer
        }
        struct ProbeFailed: Error {}
        func dirtyTrackingOffer() throws -> DirtyTrackingOffer {
            guard let offer else { throw ProbeFailed() }
            return offer
        }
    }

    let range = [GuestMemoryRange(start: 0, length: 1 << 20)]

    @Test func deviceLoggingWinsOnlyWhenEveryDeviceOffersIt() throws {
        let container = MemoryTracker(kind: .iommu, name: "c")
        let a = MemoryTracker(kind: .deviceDMALogging, name: "a")
        let b = MemoryTracker(kind: .deviceDMALogging, name: "b")
        let both = try #require(
            try DirtyTrackingPlan.choose(
                for: [Offering("A", .init(deviceLogging: a, iommu: container)), Offering("B", .init(deviceLogging: b, iommu: container))],
                ranges: range, allowUntrackedDMA: false))
        #expect(both.kind == .deviceDMALogging)
        #expect(both.trackers.map(\.trackerName) == ["a", "b"])
        let one = try #require(
            try DirtyTrackingPlan.choose(
                for: [Offering("A", .init(deviceLogging: a, iommu: container)), Offering("B", .init(iommu: container))],
                ranges: range, allowUntrackedDMA: false))
        #expect(one.kind == .iommu)
        #expect(one.trackers.map(\.trackerName) == ["c"])
    }

    @Test func aMixOfOneKindEachIsRefused() throws {
        let devices = [
            Offering("A", .init(deviceLogging: MemoryTracker(kind: .deviceDMALogging, name: "a"))),
            Offering("B", .init(iommu: MemoryTracker(kind: .iommu, name: "c")))
        ]
        let error = try #require(throws: MigrationError.self) {
            try DirtyTrackingPlan.choose(for: devices, ranges: range, allowUntrackedDMA: false)
        }
        #expect(error.code == .dirtyTrackingUnavailable)
        #expect(error.message.contains("A"))
    }

    @Test func aFailedProbeCountsAsNoTrackingAndIsNamed() throws {
        let error = try #require(throws: MigrationError.self) {
            try DirtyTrackingPlan.choose(for: [Offering("0000:00:09.0", nil)], ranges: range, allowUntrackedDMA: false)
        }
        #expect(error.message.contains("0000:00:09.0: probing its dirty tracking failed"))
        let plan = try DirtyTrackingPlan.choose(for: [Offering("0000:00:09.0", nil)], ranges: range, allowUntrackedDMA: true)
        #expect(plan?.kind == .allMappedDirty)
    }

    @Test func noDeviceNoTracking() throws {
        #expect(try DirtyTrackingPlan.choose(for: [], ranges: range, allowUntrackedDMA: false) == nil)
    }
}

/// The bitmap and the RAM's merge: addresses from devices are checked.
@Suite struct DirtyPageBitmapTests {
    @Test func bitsBeyondTheRangeAreIgnored() {
        let range = GuestMemoryRange(start: 0x10_0000, length: 3 * 4096)
        let bitmap = DirtyPageBitmap(range: range, pageSize: 4096, words: [~0, ~0])
        var seen: [UInt64] = []
        bitmap.forEachDirtyPage { seen.append($0) }
        #expect(seen == [0x10_0000, 0x10_1000, 0x10_2000])
        #expect(bitmap.dirtyPageCount == 3)
    }

    @Test func mergingChecksEveryAddressAndSpreadsLargePages() throws {
        let ram = try GuestRAM(layout: [RAMBlockLayout(name: "a", size: 8 * 4096), RAMBlockLayout(name: "b", size: 4 * 4096)])
        _ = try ram.takeDirtyPages(max: .max) { _, _, _ in }
        #expect(ram.guestRanges == [GuestMemoryRange(start: 0, length: 8 * 4096), GuestMemoryRange(start: 8 * 4096, length: 4 * 4096)])
        // A 16 KiB tracking page at 24 KiB covers pages 6, 7 of "a" and 0, 1 of "b"; a range far
        // outside RAM, and one ending at UInt64.max, mark nothing.
        var large = DirtyPageBitmap(clean: GuestMemoryRange(start: 24 << 10, length: 64 << 10), pageSize: 16 << 10)
        large.markDirty(guestAddress: 24 << 10)
        var outside = DirtyPageBitmap(clean: GuestMemoryRange(start: 1 << 40, length: 4096), pageSize: 4096)
        outside.markDirty(guestAddress: 1 << 40)
        let top = DirtyPageBitmap(range: GuestMemoryRange(start: UInt64.max - 4095, length: 4096), pageSize: 4096, words: [1])
        let (newly, ignored) = ram.mergeDirty([large, outside, top])
        #expect(newly == 4)
        #expect(ignored == 2)
        var taken: [String] = []
        _ = try ram.takeDirtyPages(max: .max) { block, page, _ in taken.append("\(ram.layout[block].name)\(page)") }
        #expect(taken == ["a6", "a7", "b0", "b1"])
    }

    @Test func aHugeTrackingPageDirtiesAllOfRAMAndNoMore() throws {
        let ram = try GuestRAM(layout: [RAMBlockLayout(name: "a", size: 8 * 4096), RAMBlockLayout(name: "b", size: 4 * 4096)])
        _ = try ram.takeDirtyPages(max: .max) { _, _, _ in }
        // One bit for 2^62 bytes from address 0: a tracker's claim, bounded by guest RAM.
        let huge = DirtyPageBitmap(range: GuestMemoryRange(start: 0, length: 1 << 62), pageSize: 1 << 62, words: [1])
        #expect(ram.mergeDirty([huge]) == (newlyDirty: 12, outside: 0))
        #expect(ram.dirtyPages == 12)
    }

    @Test func dmaOutsideRAMWritesNothing() throws {
        let ram = try GuestRAM(layout: [RAMBlockLayout(name: "a", size: 2 * 4096)])
        let digest = ram.digest()
        let page = [UInt8](repeating: 7, count: 4096)
        #expect(!page.withUnsafeBytes { ram.dmaWrite(guestAddress: 4096 + 1, bytes: $0) })
        #expect(!page.withUnsafeBytes { ram.dmaWrite(guestAddress: UInt64.max - 10, bytes: $0) })
        #expect(!page.withUnsafeBytes { ram.dmaWrite(hostAddress: UInt.max - 100, bytes: $0) })
        #expect(ram.digest() == digest)
        #expect(page.withUnsafeBytes { ram.dmaWrite(guestAddress: 4096, bytes: $0) })
        #expect(ram.digest() != digest)
        #expect(ram.dirtyPages == 0, "DMA marks nothing dirty by itself")
    }
}
