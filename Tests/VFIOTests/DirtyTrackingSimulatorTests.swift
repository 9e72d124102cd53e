import Foundation
import Synchronization
import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

/// Guest memory for the DMA tests: page-aligned, freed at deinit.
final class DMABuffer: @unchecked Sendable {  // the tests write it from one thread; the pointer never moves
    let pointer: UnsafeMutableRawPointer
    let size: Int

    init(pages: Int) {
        size = pages * 4096
        pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    }

    deinit { pointer.deallocate() }

    var address: UInt64 { UInt64(UInt(bitPattern: pointer)) }
    func byte(at offset: Int) -> UInt8 { pointer.load(fromByteOffset: offset, as: UInt8.self) }
}

@Suite("Dirty tracking in the simulator: device DMA logging, type1, iommufd")
struct DirtyTrackingSimulatorTests {
    static let iova: UInt64 = 0x10_0000

    /// A device attached to a fresh container with `buffer` mapped at `iova`.
    static func attached(
        _ configuration: SimulatedVFIOConfiguration, buffer: DMABuffer, migrationCapability: Bool = true
    ) throws -> (SimulatedVFIODevice, SimulatedVFIOContainer, VFIOType1Container) {
        let device = try SimulatedVFIODevice(configuration)
        let container = try SimulatedVFIOContainer(migrationCapability: migrationCapability)
        container.attach(device)
        let type1 = try #require(container.container)
        try type1.mapDMA(iova: iova, hostAddress: buffer.address, size: UInt64(buffer.size))
        return (device, container, type1)
    }

    // MARK: Device DMA logging

    @Test("A DMA write lands in memory through the mapping and in the device's log; a report clears it")
    func deviceLogging() throws {
        let buffer = DMABuffer(pages: 16)
        let (device, owner, _) = try Self.attached(.mtty(), buffer: buffer)
        defer { owner.close() }
        let chosen = try device.startDMALogging(ranges: [(Self.iova, 16 * 4096)], pageSize: 4096)
        #expect(chosen == 4096)
        try device.dmaWrite(iova: Self.iova + 3 * 4096 + 10, bytes: [0xAB, 0xCD])
        try device.dmaWrite(iova: Self.iova + 9 * 4096 - 1, bytes: [1, 2])  // spans pages 8 and 9
        #expect(buffer.byte(at: 3 * 4096 + 10) == 0xAB)
        #expect(buffer.byte(at: 9 * 4096) == 2)
        let report = try device.reportDMALogging(iova: Self.iova, length: 16 * 4096, pageSize: 4096)
        #expect(report.dirtyAddresses == [Self.iova + 3 * 4096, Self.iova + 8 * 4096, Self.iova + 9 * 4096])
        let again = try device.reportDMALogging(iova: Self.iova, length: 16 * 4096, pageSize: 4096)
        #expect(again.dirtyPageCount == 0)
        // A report at a larger page size folds the 4 KiB pages into it.
        try device.dmaWrite(iova: Self.iova + 5 * 4096, bytes: [7])
        let coarse = try device.reportDMALogging(iova: Self.iova, length: 16 * 4096, pageSize: 8192)
        #expect(coarse.dirtyAddresses == [Self.iova + 4 * 4096])
        try device.stopDMALogging()
        #expect(!device.isDMALoggingActive)
    }

    @Test("Writes outside the logged ranges are not logged by the device")
    func outsideRanges() throws {
        let buffer = DMABuffer(pages: 8)
        let (device, owner, _) = try Self.attached(.mtty(), buffer: buffer)
        defer { owner.close() }
        _ = try device.startDMALogging(ranges: [(Self.iova, 4 * 4096)], pageSize: 4096)
        try device.dmaWrite(iova: Self.iova + 6 * 4096, bytes: [1])
        #expect(buffer.byte(at: 6 * 4096) == 1)
        #expect(try device.reportDMALogging(iova: Self.iova, length: 8 * 4096, pageSize: 4096).dirtyPageCount == 0)
    }

    @Test("A device without log ops answers ENOTTY to PROBE and to START")
    func noLogOps() throws {
        let device = try SimulatedVFIODevice(.opaque())
        #expect(try device.dmaLoggingSupport() == .unsupported(.inappropriateIOCTLForDevice))
        #expect(throws: VFIOError.featureUnsupported(operation: .startDMALogging, device: device.name, errno: .inappropriateIOCTLForDevice))
        {
            _ = try device.startDMALogging(ranges: [(0, 4096)], pageSize: 4096)
        }
    }

    @Test("START: the kernel's refusals (no range, overlap, unaligned, too many, second start)")
    func startRefusals() throws {
        let device = try SimulatedVFIODevice(.mtty())
        // Refused before reaching the kernel.
        #expect(throws: VFIOError.self) { _ = try device.startDMALogging(ranges: [], pageSize: 4096) }
        #expect(throws: VFIOError.self) { _ = try device.startDMALogging(ranges: [(100, 4096)], pageSize: 4096) }
        let tooMany = (0..<257).map { (UInt64($0) * 8192, UInt64(4096)) }
        #expect(throws: VFIOError.self) { _ = try device.startDMALogging(ranges: tooMany, pageSize: 4096) }
        // What the simulated kernel answers to raw requests.
        let control = VFIODMALoggingControl(pageSize: 4096, numRanges: 0, ranges: 0)
        let noRange = device.rawFeature(flags: VFIOUAPI.featureSet | VFIOFeature.dmaLoggingStart.rawValue, payload: control.bytes)
        #expect(noRange.result.failureErrno == .invalidArgument)
        var overlapping = VFIODMALoggingRange(iova: 0, length: 8192).bytes + VFIODMALoggingRange(iova: 4096, length: 4096).bytes
        let overlap = overlapping.withUnsafeMutableBytes { ranges in
            let control = VFIODMALoggingControl(pageSize: 4096, numRanges: 2, ranges: UInt64(UInt(bitPattern: ranges.baseAddress)))
            return device.rawFeature(flags: VFIOUAPI.featureSet | VFIOFeature.dmaLoggingStart.rawValue, payload: control.bytes)
        }
        #expect(overlap.result.failureErrno == .invalidArgument)
        var many = [UInt8](repeating: 0, count: 257 * 16)
        let big = many.withUnsafeMutableBytes { ranges in
            let control = VFIODMALoggingControl(pageSize: 4096, numRanges: 257, ranges: UInt64(UInt(bitPattern: ranges.baseAddress)))
            return device.rawFeature(flags: VFIOUAPI.featureSet | VFIOFeature.dmaLoggingStart.rawValue, payload: control.bytes)
        }
        #expect(big.result.failureErrno == .argListTooLong)
        let getProbe = device.rawFeature(
            flags: VFIOUAPI.featureProbe | VFIOUAPI.featureGet | VFIOFeature.dmaLoggingStart.rawValue, payload: [])
        #expect(getProbe.result.failureErrno == .invalidArgument)
        _ = try device.startDMALogging(ranges: [(0, 4096)], pageSize: 4096)
        #expect(throws: VFIOError.syscallFailed(operation: .startDMALogging, device: device.name, errno: .resourceBusy)) {
            _ = try device.startDMALogging(ranges: [(0, 4096)], pageSize: 4096)
        }
    }

    @Test("REPORT before START fails EINVAL; a Debian-6.12-style kernel fails every REPORT EOPNOTSUPP")
    func reportRefusals() throws {
        let device = try SimulatedVFIODevice(.mtty())
        #expect(throws: VFIOError.syscallFailed(operation: .reportDMALogging, device: device.name, errno: .invalidArgument)) {
            _ = try device.reportDMALogging(iova: 0, length: 4096, pageSize: 4096)
        }
        #expect(throws: VFIOError.self) { _ = try device.reportDMALogging(iova: 0, length: 4096, pageSize: 2048) }
        var debian = SimulatedVFIOConfiguration.mtty(name: "debian-mtty")
        debian.dmaLoggingReportFailure = .notSupported
        let stub = try SimulatedVFIODevice(debian)
        #expect(try stub.dmaLoggingSupport() == .supported)
        _ = try stub.startDMALogging(ranges: [(0, 4096)], pageSize: 4096)
        #expect(throws: VFIOError.syscallFailed(operation: .reportDMALogging, device: stub.name, errno: .notSupported)) {
            _ = try stub.reportDMALogging(iova: 0, length: 4096, pageSize: 4096)
        }
    }

    @Test("A DMA write to an unmapped IOVA or by a detached device faults and writes nothing")
    func faults() throws {
        let buffer = DMABuffer(pages: 2)
        let (device, owner, _) = try Self.attached(.mtty(), buffer: buffer)
        defer { owner.close() }
        #expect(throws: VFIOError.self) { try device.dmaWrite(iova: Self.iova + 4096 + 4095, bytes: [1, 2]) }
        #expect(buffer.byte(at: 2 * 4096 - 1) == 0)
        let detached = try SimulatedVFIODevice(.mtty(name: "detached"))
        #expect(throws: VFIOError.self) { try detached.dmaWrite(iova: Self.iova, bytes: [1]) }
    }

    @Test("The installed memory accessor receives every DMA write")
    func accessor() throws {
        let buffer = DMABuffer(pages: 2)
        let (device, container, _) = try Self.attached(.mtty(), buffer: buffer)
        let seen = Mutex<[(UInt64, [UInt8])]>([])
        container.setMemoryAccessor { address, bytes in seen.withLock { $0.append((address, bytes)) } }
        try device.dmaWrite(iova: Self.iova + 5, bytes: [9, 8])
        let writes = seen.withLock { $0 }
        #expect(writes.count == 1)
        #expect(writes.first?.0 == buffer.address + 5)
        #expect(writes.first?.1 == [9, 8])
        #expect(buffer.byte(at: 5) == 0)
    }

    // MARK: type1

    @Test("type1 GET_INFO: the migration capability (4 KiB, 256 MiB) and DMA_AVAIL, read in two calls")
    func type1Info() throws {
        let buffer = DMABuffer(pages: 1)
        let (_, owner, type1) = try Self.attached(.mtty(), buffer: buffer)
        defer { owner.close() }
        let info = try type1.info()
        #expect(info.migration == VFIOType1MigrationCapability(pageSizeBitmap: 4096, maxDirtyBitmapSize: 256 << 20))
        #expect(info.capabilityIDs == [VFIOUAPI.type1CapMigration, VFIOUAPI.type1CapDMAAvail])
        #expect(info.dmaMappingsAvailable == 65534)
        // 24-byte argsz: the kernel answers the size it needs, 72 (as 6.12 did on mtty's container).
        var bytes = VFIOIOMMUType1Info().bytes
        _ = try bytes.withUnsafeMutableBytes {
            VFIOSystem.simulated.ioctl(type1.fileDescriptor.rawValue, VFIOUAPI.iommuGetInfo, .buffer($0))
        }.get()
        #expect(VFIOIOMMUType1Info(bytes: bytes)?.argsz == 72)
    }

    @Test("type1 DIRTY_PAGES: the pages a device writes while tracking, read and cleared")
    func type1Tracking() throws {
        let buffer = DMABuffer(pages: 64)
        let (device, owner, type1) = try Self.attached(.opaque(), buffer: buffer)
        defer { owner.close() }
        let length = UInt64(buffer.size)
        #expect(throws: VFIOError.syscallFailed(operation: .getDirtyBitmap, device: type1.name, errno: .invalidArgument)) {
            _ = try type1.dirtyBitmap(iova: Self.iova, length: length, pageSize: 4096, maxBitmapBytes: 1 << 20)
        }
        try device.dmaWrite(iova: Self.iova, bytes: [1])  // before START: not logged
        try type1.startDirtyTracking()
        try device.dmaWrite(iova: Self.iova + 63 * 4096, bytes: [1])
        try device.dmaWrite(iova: Self.iova + 2 * 4096, bytes: [1])
        let bitmap = try type1.dirtyBitmap(iova: Self.iova, length: length, pageSize: 4096, maxBitmapBytes: 1 << 20)
        #expect(bitmap.dirtyAddresses == [Self.iova + 2 * 4096, Self.iova + 63 * 4096])
        #expect(try type1.dirtyBitmap(iova: Self.iova, length: length, pageSize: 4096, maxBitmapBytes: 1 << 20).dirtyPageCount == 0)
        // The kernel's refusals: another page size, half a mapping, a range with no mapping.
        for (iova, size, page) in [
            (Self.iova, length, UInt64(8192)), (Self.iova, length / 2, 4096), (UInt64(0x4000_0000), UInt64(4096), 4096)
        ] {
            #expect(throws: VFIOError.syscallFailed(operation: .getDirtyBitmap, device: type1.name, errno: .invalidArgument)) {
                _ = try type1.dirtyBitmap(iova: iova, length: size, pageSize: page, maxBitmapBytes: 1 << 20)
            }
        }
        try type1.stopDirtyTracking()
        #expect(throws: VFIOError.self) {
            _ = try type1.dirtyBitmap(iova: Self.iova, length: length, pageSize: 4096, maxBitmapBytes: 1 << 20)
        }
        #expect(try type1.unmapDMA(iova: Self.iova, size: length) == length)
    }

    @Test("type1 without the migration capability: none in GET_INFO, DIRTY_PAGES ENOTTY")
    func type1WithoutCapability() throws {
        let buffer = DMABuffer(pages: 1)
        let (_, owner, type1) = try Self.attached(.opaque(), buffer: buffer, migrationCapability: false)
        defer { owner.close() }
        let info = try type1.info()
        #expect(info.migration == nil)
        #expect(info.capabilityIDs == [VFIOUAPI.type1CapDMAAvail])
        #expect(throws: VFIOError.featureUnsupported(operation: .startDirtyPages, device: type1.name, errno: .inappropriateIOCTLForDevice))
        {
            try type1.startDirtyTracking()
        }
    }

    @Test("type1 MAP_DMA refuses overlaps (EEXIST) and unaligned mappings (EINVAL)")
    func type1MapRefusals() throws {
        let buffer = DMABuffer(pages: 2)
        let (_, owner, type1) = try Self.attached(.opaque(), buffer: buffer)
        defer { owner.close() }
        #expect(throws: VFIOError.syscallFailed(operation: .mapDMA, device: type1.name, errno: .fileExists)) {
            try type1.mapDMA(iova: Self.iova + 4096, hostAddress: buffer.address, size: 4096)
        }
        #expect(throws: VFIOError.syscallFailed(operation: .mapDMA, device: type1.name, errno: .invalidArgument)) {
            try type1.mapDMA(iova: 0x90_0000 + 1, hostAddress: buffer.address, size: 4096)
        }
    }

    @Test("type1 UNMAP_DMA refuses to split a mapping; a group-path kernel device has the container, a no-IOMMU one none")
    func type1KernelDevice() throws {
        let host = SimulatedVFIOHost()
        host.addDevice(.pci("0000:5e:00.1"), group: 7, configuration: .opaque(), clock: ManualSimulationClock())
        let device = try KernelVFIODevice.open(.pci("0000:5e:00.1"), access: .group, paths: host.paths, system: host)
        let type1 = try #require(device.type1Container)
        #expect(device.iommufd == nil)
        #expect(try type1.info().migration?.pageSize == 4096)
        let buffer = DMABuffer(pages: 4)
        try type1.mapDMA(iova: Self.iova, hostAddress: buffer.address, size: UInt64(buffer.size))
        #expect(throws: VFIOError.syscallFailed(operation: .unmapDMA, device: type1.name, errno: .invalidArgument)) {
            try type1.unmapDMA(iova: Self.iova, size: 4096)
        }
        // DIRTY_PAGES with two operations at once is EINVAL.
        var both = VFIOIOMMUType1DirtyBitmap(argsz: 8, flags: VFIOUAPI.dirtyPagesStart | VFIOUAPI.dirtyPagesStop).bytes
        let result = both.withUnsafeMutableBytes { host.ioctl(type1.fileDescriptor.rawValue, VFIOUAPI.iommuDirtyPages, .buffer($0)) }
        #expect(result.failureErrno == .invalidArgument)
        #expect(try type1.unmapDMA(iova: Self.iova, size: UInt64(buffer.size)) == UInt64(buffer.size))
        try device.close()
    }

    @Test("iommufd GET_DIRTY_BITMAP: unknown flags EOPNOTSUPP, overflow EOVERFLOW, a page size below 4 KiB EINVAL")
    func iommufdBitmapRefusals() throws {
        let (host, device, _) = try Self.cdevHost(iommuDirtyTracking: true)
        let hwpt = try #require(device.dirtyTrackingHWPT)
        let iommufd = try #require(device.iommufd)
        func raw(_ request: IOMMUHWPTGetDirtyBitmap) -> Errno? {
            var words = [UInt64](repeating: 0, count: 4)
            return words.withUnsafeMutableBytes { buffer in
                var request = request
                request.data = UInt64(UInt(bitPattern: buffer.baseAddress))
                var bytes = request.bytes
                return bytes.withUnsafeMutableBytes {
                    host.ioctl(iommufd.fileDescriptor.rawValue, VFIOUAPI.iommuHWPTGetDirtyBitmap, .buffer($0))
                }
                .failureErrno
            }
        }
        #expect(raw(IOMMUHWPTGetDirtyBitmap(hwptID: hwpt, flags: 2, iova: 0, length: 4096, pageSize: 4096, data: 0)) == .notSupported)
        #expect(raw(IOMMUHWPTGetDirtyBitmap(hwptID: hwpt, iova: .max - 4095, length: 8192, pageSize: 4096, data: 0)) == .overflow)
        #expect(raw(IOMMUHWPTGetDirtyBitmap(hwptID: hwpt, iova: 0, length: 4096, pageSize: 2048, data: 0)) == .invalidArgument)
        #expect(raw(IOMMUHWPTGetDirtyBitmap(hwptID: hwpt, iova: 0, length: 4096, pageSize: 4096, data: 0)) == nil)
        #expect(throws: VFIOError.featureUnsupported(operation: .setHWPTDirtyTracking, device: iommufd.name, errno: .notSupported)) {
            var set = IOMMUHWPTSetDirtyTracking(flags: 4, hwptID: hwpt).bytes
            let result = set.withUnsafeMutableBytes {
                host.ioctl(iommufd.fileDescriptor.rawValue, VFIOUAPI.iommuHWPTSetDirtyTracking, .buffer($0))
            }
            if let errno = result.failureErrno {
                throw VFIOError.featureUnsupported(operation: .setHWPTDirtyTracking, device: iommufd.name, errno: errno)
            }
        }
    }

    // MARK: iommufd

    static func cdevHost(iommuDirtyTracking: Bool) throws -> (SimulatedVFIOHost, KernelVFIODevice, SimulatedVFIODriver) {
        let host = SimulatedVFIOHost(cdevSupport: true)
        var configuration = SimulatedVFIOConfiguration.opaque()
        configuration.iommuDirtyTracking = iommuDirtyTracking
        let driver = host.addDevice(
            .pci("0000:5e:00.1"), group: 3, cdevIndex: 0, configuration: configuration, clock: ManualSimulationClock())
        let device = try KernelVFIODevice.open(.pci("0000:5e:00.1"), access: .cdev, paths: host.paths, system: host)
        return (host, device, driver)
    }

    @Test("iommufd: a HWPT with dirty tracking logs the device's DMA writes while enabled")
    func iommufdTracking() throws {
        let (_, device, driver) = try Self.cdevHost(iommuDirtyTracking: true)
        let hwpt = try #require(device.dirtyTrackingHWPT)
        let iommufd = try #require(device.iommufd)
        guard case .cdev(_, let ioas) = device.openPath else {
            Issue.record("not opened through the cdev")
            return
        }
        let buffer = DMABuffer(pages: 8)
        try iommufd.mapIOAS(ioas, iova: Self.iova, hostAddress: buffer.address, length: UInt64(buffer.size))
        #expect(driver.dmaWrite(iova: Self.iova, bytes: [1]).failureErrno == nil)  // not enabled yet
        try iommufd.setDirtyTracking(hwptID: hwpt, enabled: true)
        #expect(driver.dmaWrite(iova: Self.iova + 5 * 4096, bytes: [2]).failureErrno == nil)
        #expect(buffer.byte(at: 5 * 4096) == 2)
        let bitmap = try iommufd.dirtyBitmap(hwptID: hwpt, iova: Self.iova, length: UInt64(buffer.size), pageSize: 4096)
        #expect(bitmap.dirtyAddresses == [Self.iova + 5 * 4096])
        #expect(try iommufd.dirtyBitmap(hwptID: hwpt, iova: Self.iova, length: UInt64(buffer.size), pageSize: 4096).dirtyPageCount == 0)
        #expect(throws: VFIOError.syscallFailed(operation: .getHWPTDirtyBitmap, device: iommufd.name, errno: .noSuchFileOrDirectory)) {
            _ = try iommufd.dirtyBitmap(hwptID: 999, iova: Self.iova, length: 4096, pageSize: 4096)
        }
        try iommufd.setDirtyTracking(hwptID: hwpt, enabled: false)
    }

    @Test("iommufd: an IOMMU without dirty tracking refuses the HWPT (EOPNOTSUPP); the device sits on the IOAS")
    func iommufdWithoutTracking() throws {
        let (_, device, _) = try Self.cdevHost(iommuDirtyTracking: false)
        #expect(device.dirtyTrackingHWPT == nil)
        let iommufd = try #require(device.iommufd)
        guard case .cdev(_, let ioas) = device.openPath else {
            Issue.record("not opened through the cdev")
            return
        }
        #expect(throws: VFIOError.featureUnsupported(operation: .allocateHWPT, device: iommufd.name, errno: .notSupported)) {
            _ = try iommufd.allocateHWPT(deviceID: try #require(device.iommufdDeviceID), ioasID: ioas, dirtyTracking: true)
        }
        let plain = try iommufd.allocateHWPT(deviceID: try #require(device.iommufdDeviceID), ioasID: ioas, dirtyTracking: false)
        #expect(throws: VFIOError.featureUnsupported(operation: .setHWPTDirtyTracking, device: iommufd.name, errno: .notSupported)) {
            try iommufd.setDirtyTracking(hwptID: plain, enabled: true)
        }
    }
}

extension Result {
    var failureErrno: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
