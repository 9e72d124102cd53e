import ExampleVM
import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import Testing

/// A device's DMA log or a container's dirty tracking, in memory: what the simulator's trackers
/// do, without VFIO.
final class MemoryTracker: DirtyPageTracker {
    let kind: DirtyTrackingKind
    let trackerName: String
    private let state = Mutex<(bitmaps: [DirtyPageBitmap]?, starts: Int, stops: Int, collects: Int)>((nil, 0, 0, 0))

    init(kind: DirtyTrackingKind, name: String) {
        self.kind = kind
        self.trackerName = name
    }

    var isTracking: Bool { state.withLock { $0.bitmaps != nil } }
    var counts: (starts: Int, stops: Int, collects: Int) { state.withLock { ($0.starts, $0.stops, $0.collects) } }

    func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws {
        state.withLock {
            $0.bitmaps = ranges.map { DirtyPageBitmap(clean: $0, pageSize: pageSize) }
            $0.starts += 1
        }
    }

    func collectDirtyPages() throws -> [DirtyPageBitmap] {
        state.withLock {
            $0.collects += 1
            guard let bitmaps = $0.bitmaps else { return [] }
            $0.bitmaps = bitmaps.map { DirtyPageBitmap(clean: $0.range, pageSize: $0.pageSize) }
            return bitmaps
        }
    }

    func stopTracking() {
        state.withLock {
            if $0.bitmaps != nil { $0.stops += 1 }
            $0.bitmaps = nil
        }
    }

    /// A DMA write reached `guestAddress`: logged while tracking.
    func record(_ guestAddress: UInt64) {
        state.withLock {
            guard var bitmaps = $0.bitmaps else { return }
            for i in bitmaps.indices where bitmaps[i].markDirty(guestAddress: guestAddress) { break }
            $0.bitmaps = bitmaps
        }
    }
}

/// A device that writes guest RAM by DMA: a few pages at every pass of the source (its
/// pending query, on the migration thread) and a last burst as it stops at the switchover
/// (which only the final sync catches). It sends no section; the destination registers one
/// that writes nothing. Deterministic: the pages and their content follow a counter.
final class DMATestDevice: DMAWritingDevice, MigrationHandler {
    let dmaDeviceName: String
    let ram: GuestRAM
    let log: MemoryTracker?
    let iommu: MemoryTracker?
    let pagesPerPass: Int
    /// Called on each pass with the pass number (e.g. to cancel the migration).
    let onPass: (@Sendable (Int) -> Void)?
    private let counter = Mutex<(writes: UInt64, passes: Int)>((0, 0))

    init(
        name: String, ram: GuestRAM, log: MemoryTracker? = nil, iommu: MemoryTracker? = nil, pagesPerPass: Int = 4,
        onPass: (@Sendable (Int) -> Void)? = nil
    ) {
        self.dmaDeviceName = name
        self.ram = ram
        self.log = log
        self.iommu = iommu
        self.pagesPerPass = pagesPerPass
        self.onPass = onPass
    }

    var pagesWritten: UInt64 { counter.withLock { $0.writes } }

    func dirtyTrackingOffer() throws -> DirtyTrackingOffer {
        let reason =
            log == nil && iommu == nil
            ? "\(dmaDeviceName): no DMA logging (ENOTTY), its container has no dirty tracking" : nil
        return DirtyTrackingOffer(deviceLogging: log, iommu: iommu, unavailableReason: reason)
    }

    /// One DMA write of a page: content and page from the write counter, spread over all of RAM.
    func dmaWritePage() {
        let n = counter.withLock {
            $0.writes += 1
            return $0.writes
        }
        let total = UInt64(ram.totalBytes / GuestRAM.pageSize)
        let address = (n &* 7919 % total) * UInt64(GuestRAM.pageSize)
        let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: n &* 31 &+ 1), count: GuestRAM.pageSize)
        let written = bytes.withUnsafeBytes { ram.dmaWrite(guestAddress: address, bytes: $0) }
        precondition(written, "the test device's address \(address) lies inside the RAM")
        log?.record(address)
        iommu?.record(address)
    }

    // MARK: MigrationHandler

    var hasFullState: Bool { false }

    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        Issue.record("the DMA test device sends no section, yet \(header) came")
    }

    func pendingEstimate(context: SaveContext) -> PendingBytes {
        guard context.vmRunning else { return .zero }
        let pass = counter.withLock {
            $0.passes += 1
            return $0.passes
        }
        for _ in 0..<pagesPerPass { dmaWritePage() }
        onPass?(pass)
        return .zero
    }

    func runStateChanged(_ change: VMRunStateChange) throws {
        // The device's last writes before it stops.
        if !change.running && change.reason == .switchover {
            for _ in 0..<pagesPerPass { dmaWritePage() }
        }
    }
}

/// vCPUs that are a flag.
final class FlagVCPUs: VMController {
    private let running: Mutex<Bool>
    init(running: Bool) { self.running = Mutex(running) }
    var isRunning: Bool { running.withLock { $0 } }
    func stopVM() throws { running.withLock { $0 = false } }
    func resumeVM() throws { running.withLock { $0 = true } }
}

/// A source and a destination VM of 1 MiB (no workload) with DMA test devices, over a socket
/// pair whose source end counts the bytes written.
struct DMAMigrationRig {
    let sourceVM: ExampleVM
    let destinationVM: ExampleVM
    let devices: [DMATestDevice]
    let source: MigrationSource
    let destination: MigrationDestination
    let sourceEnd: FaultInjectingConnection
    let destinationEnd: any MigrationConnection

    /// - Parameters:
    ///   - trackers: for each device, its DMA log and its container's tracker (nil: none).
    ///   - registerDevices: false leaves the devices out of the source's dirty tracking (the
    ///     test-only "tracking off").
    init(
        trackers: [(log: MemoryTracker?, iommu: MemoryTracker?)], registerDevices: Bool = true,
        parameters: MigrationParameters = Self.parameters, cutAt: Int = .max, onPass: (@Sendable (Int) -> Void)? = nil,
        withRAM: Bool = true
    ) throws {
        sourceVM = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 0, seed: 0x5EED)
        destinationVM = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 0, seed: 0xD1FF)
        let sourceRegistry = HandlerRegistry()
        let destinationRegistry = HandlerRegistry()
        let ram = RAMHandler.identity
        if withRAM {
            // 16 pages a section: the first pass takes several iterations, with DMA between them.
            let sourceRAM = RAMHandler(ram: sourceVM.ram, pagesPerSection: 16)
            try sourceRegistry.register(sourceRAM, idstr: ram.idstr, instanceID: 0, versionID: ram.versionID)
            let destinationRAM = RAMHandler(ram: destinationVM.ram, pagesPerSection: 16)
            try destinationRegistry.register(destinationRAM, idstr: ram.idstr, instanceID: 0, versionID: ram.versionID)
        }
        var devices: [DMATestDevice] = []
        for (index, t) in trackers.enumerated() {
            let name = "0000:00:0\(index + 1).0"
            let device = DMATestDevice(name: name, ram: sourceVM.ram, log: t.log, iommu: t.iommu, onPass: onPass)
            devices.append(device)
            try sourceRegistry.register(device, idstr: "\(name)/dma", instanceID: 0, versionID: 1)
            try destinationRegistry.register(
                DMATestDevice(name: name, ram: destinationVM.ram, pagesPerPass: 0), idstr: "\(name)/dma", instanceID: 0, versionID: 1)
        }
        self.devices = devices
        let (a, b) = try DescriptorConnection.socketPair()
        sourceEnd = FaultInjectingConnection(wrapping: a, fault: .cut(atOffset: cutAt))
        destinationEnd = b
        let tracking =
            registerDevices
            ? DirtyTrackingConfiguration(devices: devices, ranges: sourceVM.ram.guestRanges, pageSize: UInt64(GuestRAM.pageSize))
            : .none
        source = MigrationSource(
            runState: VMRunState(registry: sourceRegistry, vcpus: FlagVCPUs(running: true)),
            configuration: MachineConfiguration(machineType: "pc-q35-7.2"), parameters: parameters, dirtyTracking: tracking)
        destination = MigrationDestination(
            registry: destinationRegistry, vm: FlagVCPUs(running: false),
            configuration: MachineConfiguration(machineType: "pc-q35-7.2"), parameters: parameters)
    }

    static var parameters: MigrationParameters {
        var p = MigrationParameters()
        p.downtimeLimit = .seconds(2)
        p.stallTimeout = .seconds(120)
        return p
    }

    /// Runs both ends. The source's result, and the destination's error if it failed.
    func run() async -> (source: Result<MigrationStatistics, any Error>, destination: (any Error)?) {
        let destination = self.destination
        let destinationEnd = self.destinationEnd
        let incoming = Task { () -> (any Error)? in
            do {
                _ = try await destination.run(over: destinationEnd)
                return nil
            } catch {
                return error
            }
        }
        let outgoing: Result<MigrationStatistics, any Error>
        do {
            outgoing = .success(try await source.run(over: sourceEnd))
        } catch {
            outgoing = .failure(error)
            destination.cancel()
        }
        return (outgoing, await incoming.value)
    }
}
