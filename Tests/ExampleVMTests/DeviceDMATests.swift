import Foundation
import MigrationCore
import Testing

@testable import ExampleVM

/// The example machine's simulated devices writing guest RAM by DMA (`dma=`), through the
/// simulator's IOMMU path, tracked by their DMA logs or their container, or by nothing.
@Suite struct DeviceDMATests {
    /// 4 MiB of RAM the guest does not dirty itself (so only DMA can leave a page stale), a device
    /// of 4 MiB of state (the migration takes several passes) and a device writing 8 MiB/s.
    static func configuration(_ dmaDevice: String) throws -> ExampleMachineConfiguration {
        ExampleMachineConfiguration(
            memoryBytes: 4 << 20, dirtyPagesPerSecond: 0,
            devices: [try DeviceSpec(parsing: "vfio-pci:state=4MiB,initial=3MiB"), try DeviceSpec(parsing: dmaDevice)])
    }

    static var parameters: MigrationParameters {
        var p = MigrationParameters()
        p.downtimeLimit = .seconds(2)
        p.stallTimeout = .seconds(120)
        // 16 MiB/s: the pre-copy takes about half a second, with DMA all along.
        p.maxBandwidth = 16 << 20
        return p
    }

    static func run(_ spec: String, parameters: MigrationParameters = Self.parameters, track: Bool = true) async throws -> LoopbackResult {
        try await LoopbackMigration.run(
            try configuration(spec), parameters: parameters, timeout: .seconds(180), progress: nil, secure: nil, trackDeviceDMA: track)
    }

    @Test func untrackedDMALeavesTheDestinationsRAMStale() async throws {
        let result = try await Self.run("mlx5:state=1MiB,initial=512KiB,dma=8MiB/s", track: false)
        #expect(result.statistics.dirtyTracking == nil)
        let dma = try #require(result.deviceDMA.first)
        #expect(dma.pages > 0 && dma.failure == nil)
        #expect(result.sourceDigests.ram != result.destinationDigests.ram, "device DMA after the RAM's first pass was lost")
    }

    @Test(arguments: [
        ("mlx5:state=1MiB,initial=512KiB,dma=8MiB/s", DirtyTrackingKind.deviceDMALogging),
        ("mtty:dma=8MiB/s", .deviceDMALogging),
        ("vfio-pci:state=1MiB,dma=8MiB/s", .iommu),
        ("mlx5:state=1MiB,dma=8MiB/s,dma-tracking=iommu", .iommu)
    ])
    func trackedDMAArrivesIdentical(spec: String, kind: DirtyTrackingKind) async throws {
        let result = try await Self.run(spec)
        #expect(result.verification.verified, "\(result.verification.checks.filter { !$0.matches })")
        let dma = try #require(result.deviceDMA.first)
        #expect(dma.pages > 0 && dma.failure == nil)
        let tracking = try #require(result.statistics.dirtyTracking)
        #expect(tracking.kind == kind)
        #expect(tracking.trackerCount == 1)
        #expect(tracking.pagesPerSync.reduce(0, +) > 0)
        #expect(tracking.finalSyncPages != nil)
    }

    @Test func aDeviceNothingCanTrackIsRefusedUnlessOptedIn() async throws {
        let spec = "vfio-pci:state=1MiB,dma=8MiB/s,dma-tracking=none"
        let error = try await #require(throws: LoopbackMigrationError.self) { try await Self.run(spec) }
        let source = try #require(error.source as? MigrationError)
        #expect(source.code == .dirtyTrackingUnavailable)
        #expect(source.message.contains("0000:00:02.0"))
        #expect(source.message.contains("no device DMA logging"))

        var parameters = Self.parameters
        parameters.allowUntrackedDMA = true
        let result = try await Self.run(spec, parameters: parameters)
        #expect(result.verification.verified, "\(result.verification.checks.filter { !$0.matches })")
        #expect(result.statistics.dirtyTracking?.kind == .allMappedDirty)
    }

    @Test func dmaThroughTheSimulatorMarksNoGuestPageDirty() throws {
        let machine = try ExampleMachine(try Self.configuration("mtty:dma=1MiB/s"), role: .source)
        defer { machine.shutdown() }
        #expect(machine.dirtyTracking.devices.map(\.dmaDeviceName) == ["0000:00:02.0"])
        #expect(machine.dirtyTracking.ranges == machine.vm.ram.guestRanges)
        _ = try machine.vm.ram.takeDirtyPages(max: .max) { _, _, _ in }
        let before = machine.vm.ram.digest()
        try machine.start()
        while machine.vm.workload.deviceDMA.first?.pages ?? 0 == 0 { Thread.sleep(forTimeInterval: 0.005) }
        _ = try machine.runState.stop(.vmm)
        #expect(machine.vm.ram.digest() != before)
        #expect(machine.vm.ram.dirtyPages == 0)
        #expect(machine.vm.workload.deviceDMA.first?.failure == nil)
    }

    @Test func aDestinationHasNoDMA() throws {
        let machine = try ExampleMachine(try Self.configuration("mtty:dma=1MiB/s"), role: .destination)
        defer { machine.shutdown() }
        #expect(machine.dirtyTracking.devices.isEmpty)
    }
}
