// What the real kernel answers for dirty tracking on the mtty pair (issue #17), and that the engine's
// choice and blocker follow those answers: docs/kernel-test.md, section 3b. Runs after the lifecycle
// checks, while both devices are open in the parent.
#if os(Linux)
import Glibc
import KernelTestSupport
import MigrationCore
import SystemPackage
import VFIO
import VFIOPCIHandler

enum DirtyTrackingChecks {
    /// The IOVA the checks map their buffer at, and its size: 256 pages of 4 KiB.
    static let iova: UInt64 = 0x10_0000
    static let length: UInt64 = 1 << 20

    static func run(source: KernelVFIODevice, destination: KernelVFIODevice, report: inout VFIOCheckReport) {
        report.run(KernelCheck.dmaLoggingAnswer.name) { c in dmaLoggingAnswer(source, &c) }
        report.run(KernelCheck.type1DirtyTracking.name) { c in try type1DirtyTracking(source, &c) }
        report.run(KernelCheck.dirtyTrackingChoice.name) { c in dirtyTrackingChoice(source, destination, &c) }
    }

    private static func errnoName(_ error: VFIOError) -> String { error.errno.map { "\($0) (\($0.rawValue))" } ?? "\(error)" }

    /// PROBE, START, REPORT, STOP of device DMA logging on mtty.
    static func dmaLoggingAnswer(_ device: KernelVFIODevice, _ c: inout VFIOCheck) {
        do {
            c.expectEqual(try device.dmaLoggingSupport(), .supported, "PROBE|SET DMA_LOGGING_START")
        } catch {
            c.expect(false, "PROBE failed: \(error)")
        }
        let start = VFIOFeature.dmaLoggingStart.rawValue
        c.expectErrno(
            device.rawFeature(flags: VFIOUAPI.featureProbe | VFIOUAPI.featureGet | start, payload: []).result, .invalidArgument,
            "PROBE|GET START")
        let noRange = VFIODMALoggingControl(pageSize: 4096, numRanges: 0, ranges: 0).bytes
        c.expectErrno(
            device.rawFeature(flags: VFIOUAPI.featureSet | start, payload: noRange).result, .invalidArgument, "SET START with no range")
        do {
            let chosen = try device.startDMALogging(ranges: [(iova, length)], pageSize: 4096)
            c.note("DMA_LOGGING_START of 1 MiB at 0x\(String(iova, radix: 16)): 0, page size chosen \(chosen)")
        } catch {
            c.expect(false, "START with one range: \(error)")
            return
        }
        // Debian's 6.12 has no CONFIG_IOMMUFD_DRIVER: the core's bitmap walker is a stub, every REPORT fails.
        if let error = c.expectError(
            "DMA_LOGGING_REPORT", { () throws(VFIOError) in try device.reportDMALogging(iova: iova, length: length, pageSize: 4096) })
        {
            c.note("DMA_LOGGING_REPORT: \(errnoName(error))")
            c.expectEqual(error.errno, .notSupported, "REPORT errno")
        }
        do {
            try device.stopDMALogging()
            // STOP ended the session: a new START is accepted, then stopped again.
            _ = try device.startDMALogging(ranges: [(iova, length)], pageSize: 4096)
            try device.stopDMALogging()
        } catch {
            c.expect(false, "STOP, START again, STOP: \(error)")
        }
        // The adapter starts with one REPORT, so the failure shows before a migration sends anything.
        let tracker = VFIODMADevice(device)
        do {
            guard let logging = try tracker.dirtyTrackingOffer().deviceLogging else {
                c.expect(false, "the adapter offers no device logging although PROBE succeeds")
                return
            }
            do {
                try logging.startTracking(ranges: [GuestMemoryRange(start: iova, length: length)], pageSize: 4096)
                c.expect(false, "the logging tracker started although REPORT fails")
                logging.stopTracking()
            } catch {
                c.note("the logging tracker refused to start: \(error)")
            }
            // …and it left logging stopped: START is accepted again.
            _ = try device.startDMALogging(ranges: [(iova, length)], pageSize: 4096)
            try device.stopDMALogging()
        } catch {
            c.expect(false, "after the tracker's failed start: \(error)")
        }
    }

    /// A 1 MiB buffer mapped into the device's type1 container, GET_INFO's migration capability,
    /// DIRTY_PAGES START/GET_BITMAP/STOP and the kernel's refusals.
    static func type1DirtyTracking(_ device: KernelVFIODevice, _ c: inout VFIOCheck) throws {
        guard let container = device.type1Container else { throw VFIOCheckAbort("\(device.name) has no type1 container") }
        let info: VFIOType1ContainerInfo
        do { info = try container.info() } catch { throw VFIOCheckAbort("VFIO_IOMMU_GET_INFO: \(error)") }
        c.note(
            "GET_INFO: iova_pgsizes 0x\(String(info.iovaPageSizes, radix: 16)), caps \(info.capabilityIDs), DMA available \(info.dmaMappingsAvailable.map(String.init) ?? "-")"
        )
        c.expectEqual(
            info.migration, VFIOType1MigrationCapability(pageSizeBitmap: 0x1000, maxDirtyBitmapSize: 256 << 20), "migration capability")
        c.expect(info.capabilityIDs.contains(VFIOUAPI.type1CapDMAAvail), "no DMA_AVAIL capability in \(info.capabilityIDs)")
        guard let memory = mmap(nil, Int(length), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else {
            throw VFIOCheckAbort("mmap of 1 MiB failed")
        }
        defer { munmap(memory, Int(length)) }
        let host = UInt64(UInt(bitPattern: memory))
        func bitmap(_ start: UInt64 = iova, _ size: UInt64 = length, page: UInt64 = 4096) throws(VFIOError) -> VFIODirtyBitmap {
            try container.dirtyBitmap(iova: start, length: size, pageSize: page, maxBitmapBytes: 256 << 20)
        }
        func refused(_ what: String, _ body: () throws(VFIOError) -> VFIODirtyBitmap, _ c: inout VFIOCheck) {
            if let error = c.expectError(what, body) { c.expectEqual(error.errno, .invalidArgument, what) }
        }
        refused("GET_BITMAP before MAP and START", { () throws(VFIOError) in try bitmap() }, &c)
        do { try container.mapDMA(iova: iova, hostAddress: host, size: length) } catch { throw VFIOCheckAbort("MAP_DMA: \(error)") }
        refused("GET_BITMAP before START", { () throws(VFIOError) in try bitmap() }, &c)
        do { try container.startDirtyTracking() } catch { throw VFIOCheckAbort("DIRTY_PAGES START: \(error)") }
        // The CPU writes every page: type1 reports only what devices pin or write through vfio_dma_rw.
        for page in 0..<Int(length / 4096) { memory.storeBytes(of: UInt8(page & 0xFF) | 1, toByteOffset: page * 4096, as: UInt8.self) }
        do {
            let first = try bitmap()
            c.note("GET_BITMAP after CPU writes to all 256 pages: \(first.dirtyPageCount) of \(first.length / 4096) bits set")
            c.expectEqual(first.dirtyPageCount, 0, "dirty pages of an mdev-only container (mtty pins none)")
        } catch {
            c.expect(false, "GET_BITMAP: \(error)")
        }
        refused("GET_BITMAP with pgsize 8192", { () throws(VFIOError) in try bitmap(page: 8192) }, &c)
        refused("GET_BITMAP of half the mapping", { () throws(VFIOError) in try bitmap(iova, length / 2) }, &c)
        // A bitmap of 8 bytes for 256 pages (32 needed): the typed API cannot ask it, so raw.
        var words = [UInt64](repeating: 0, count: 1)
        let short = words.withUnsafeMutableBytes { buffer -> Result<Int32, Errno> in
            var bytes = VFIOIOMMUType1DirtyBitmap(
                argsz: UInt32(VFIOIOMMUType1DirtyBitmap.size), flags: VFIOUAPI.dirtyPagesGetBitmap, iova: iova, length: length,
                pageSize: 4096, bitmapSize: 8, bitmapData: UInt64(UInt(bitPattern: buffer.baseAddress))
            ).bytes
            let rc = bytes.withUnsafeMutableBytes { argument -> Int32 in
                guard let base = argument.baseAddress else { return -1 }
                return ioctl(container.fileDescriptor.rawValue, VFIOUAPI.iommuDirtyPages, base)
            }
            return rc == 0 ? .success(0) : .failure(Errno(rawValue: errno))
        }
        c.expectErrno(short, .invalidArgument, "GET_BITMAP with a bitmap shorter than the range needs")
        do { try container.stopDirtyTracking() } catch { c.expect(false, "DIRTY_PAGES STOP: \(error)") }
        refused("GET_BITMAP after STOP", { () throws(VFIOError) in try bitmap() }, &c)
        // The tracker the engine would use: start, collect, stop through the adapter.
        let tracker = VFIOType1DirtyTracker(container: container)
        do {
            try tracker.startTracking(ranges: [GuestMemoryRange(start: iova, length: length)], pageSize: 4096)
            let pages = try tracker.collectDirtyPages().reduce(0) { $0 + $1.dirtyPageCount }
            c.expectEqual(pages, 0, "the type1 tracker's dirty pages")
            tracker.stopTracking()
        } catch {
            c.expect(false, "the type1 tracker: \(error)")
            tracker.stopTracking()
        }
        do {
            c.expectEqual(try container.unmapDMA(iova: iova, size: length), length, "UNMAP_DMA size")
        } catch {
            c.expect(false, "UNMAP_DMA: \(error)")
        }
    }

    /// A DMA-writing device whose own log the VMM turned off (as QEMU's `x-device-dirty-page-tracking=off`).
    final class WithoutDeviceLogging: DMAWritingDevice {
        let base: VFIODMADevice
        init(_ base: VFIODMADevice) { self.base = base }
        var dmaDeviceName: String { base.dmaDeviceName }
        func dirtyTrackingOffer() throws -> DirtyTrackingOffer {
            var offer = try base.dirtyTrackingOffer()
            offer.deviceLogging = nil
            return offer
        }
    }

    /// The engine's choice over the kernel's answers, and its blocker before any byte is sent.
    static func dirtyTrackingChoice(_ source: KernelVFIODevice, _ destination: KernelVFIODevice, _ c: inout VFIOCheck) {
        let devices = [VFIODMADevice(source), VFIODMADevice(destination)]
        let ranges = [GuestMemoryRange(start: iova, length: length)]
        do {
            let plan = try DirtyTrackingPlan.choose(for: devices, ranges: ranges, allowUntrackedDMA: false)
            c.expectEqual(plan?.kind, .deviceDMALogging, "the choice when PROBE says both devices log")
            let iommuPlan = try DirtyTrackingPlan.choose(
                for: devices.map(WithoutDeviceLogging.init), ranges: ranges, allowUntrackedDMA: false)
            c.expectEqual(iommuPlan?.kind, .iommu, "the choice without device logging (both containers have the migration capability)")
            c.expectEqual(iommuPlan?.trackers.count, 2, "IOMMU trackers (one per container: each device opened its own)")
        } catch {
            c.expect(false, "the choice: \(error)")
        }
        // The engine: device logging is chosen, its start fails on REPORT, the migration is refused
        // before the stream is written.
        let path = "/tmp/kernel-vfio-check.dirty.stream"
        unlink(path)
        let engine = MigrationSource(
            registry: HandlerRegistry(), vm: FlagGuest(running: true), configuration: EngineSupport.configuration,
            dirtyTracking: DirtyTrackingConfiguration(devices: devices, ranges: ranges))
        do {
            _ = try KernelTestSupport.wait { try await engine.run(to: FileTransport(path: path)) }
            c.expect(false, "the migration ran although the device log cannot be read")
        } catch let error as MigrationError {
            c.note("the engine refused: \(error)")
            c.expectEqual(error.code, .dirtyTrackingUnavailable, "error code")
            c.expect(error.description.contains(source.name), "the refusal does not name \(source.name)")
        } catch {
            c.expect(false, "the engine failed otherwise: \(error)")
        }
        var status = stat()
        let written = stat(path, &status) == 0 ? Int(status.st_size) : 0
        c.expectEqual(written, 0, "bytes written to the stream")
        unlink(path)
        // Nothing was left logging: both devices take a new START.
        for device in [source, destination] {
            do {
                _ = try device.startDMALogging(ranges: [(iova, length)], pageSize: 4096)
                try device.stopDMALogging()
            } catch {
                c.expect(false, "\(device.name) after the refusal: \(error)")
            }
        }
    }
}
#endif
