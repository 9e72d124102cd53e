import Synchronization
import SystemPackage
import VFIO

/// /dev/vfio/vfio as the type1 IOMMU driver answers it (drivers/vfio/vfio_iommu_type1.c): API
/// version, extensions, SET_IOMMU, then GET_INFO with its capability chain, MAP_DMA/UNMAP_DMA and
/// DIRTY_PAGES. With `migrationCapability` false it is a type1 driver from before 5.8: GET_INFO
/// has no migration capability and DIRTY_PAGES is an unknown ioctl (ENOTTY).
package final class SimulatedType1ContainerFile: SimulatedControlFile {
    struct State {
        var groups = 0
        var iommuType: UInt?
    }

    let migrationCapability: Bool
    let domain = SimulatedIOMMUDomain()
    /// The container's dirty log (type1 tracks every mapping of the container).
    let log = SimulatedIOMMUDirtyLog()
    let state = Mutex(State())
    /// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`: the default `dma_entry_limit` of the module.
    static let dmaEntryLimit: UInt32 = 65535

    init(migrationCapability: Bool, accessor: SimulatedDMAMemoryAccessor? = nil) {
        self.migrationCapability = migrationCapability
        domain.setAccessor(accessor)
        domain.state.withLock { $0.logs.append(log) }
    }

    var isReady: Bool { state.withLock { $0.groups > 0 && $0.iommuType != nil } }
    var attachment: SimulatedIOMMUAttachment { SimulatedIOMMUAttachment(domain: domain, log: log) }

    func attachGroup() { state.withLock { $0.groups += 1 } }

    /// A container with a group already set and type1v2 selected (a standalone container).
    func makeReady() {
        state.withLock {
            $0.groups = max($0.groups, 1)
            $0.iommuType = VFIOUAPI.type1v2IOMMU
        }
    }

    package func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        switch (request, argument) {
        case (VFIOUAPI.getAPIVersion, _):
            return .success(VFIOUAPI.apiVersion)
        case (VFIOUAPI.checkExtension, .value(let extensionNumber)):
            // type1 (1), type1v2 (3) and no-IOMMU (8); there is no dirty-tracking extension: the
            // migration capability of GET_INFO is the only signal.
            return .success([1, VFIOUAPI.type1v2IOMMU, VFIOUAPI.noIOMMU].contains(extensionNumber) ? 1 : 0)
        case (VFIOUAPI.setIOMMU, .value(let type)):
            return state.withLock { state in
                guard state.groups > 0 else { return .failure(.invalidArgument) }
                guard state.iommuType == nil else { return .failure(.resourceBusy) }
                state.iommuType = type
                return .success(0)
            }
        default:
            break
        }
        // Without an IOMMU driver the container has no other ioctl (vfio_fops_unl_ioctl: EINVAL);
        // the no-IOMMU driver answers ENOTTY to everything but CHECK_EXTENSION.
        guard let type = state.withLock({ $0.iommuType }) else { return .failure(.invalidArgument) }
        guard type != VFIOUAPI.noIOMMU else { return .failure(.inappropriateIOCTLForDevice) }
        guard case .buffer(let buffer) = argument else { return .failure(.inappropriateIOCTLForDevice) }
        switch request {
        case VFIOUAPI.iommuGetInfo: return getInfo(buffer)
        case VFIOUAPI.iommuMapDMA: return mapDMA(buffer)
        case VFIOUAPI.iommuUnmapDMA: return unmapDMA(buffer)
        case VFIOUAPI.iommuDirtyPages where migrationCapability: return dirtyPages(buffer, v2: type == VFIOUAPI.type1v2IOMMU)
        default: return .failure(.inappropriateIOCTLForDevice)
        }
    }

    /// vfio_iommu_type1_get_info: argsz ≥ 16; the chain (migration, DMA available) follows the
    /// 24-byte struct when argsz leaves room for it, else argsz comes back as the size needed.
    private func getInfo(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Int32, Errno> {
        guard let info = VFIOIOMMUType1Info(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
        guard info.argsz >= 16 else { return .failure(.invalidArgument) }
        var caps: [UInt8] = []
        if migrationCapability {
            caps +=
                VFIOIOMMUType1MigrationCap(
                    pageSizeBitmap: SimulatedIOMMUDomain.pageSize, maxDirtyBitmapSize: VFIOUAPI.type1MaxDirtyBitmapSize
                )
                .bytes
        }
        let availOffset = caps.count
        caps += VFIOIOMMUType1DMAAvailCap(available: Self.dmaEntryLimit - UInt32(clamping: domain.mappings.count)).bytes
        caps += [UInt8](repeating: 0, count: 4)  // vfio_info_cap_add aligns each capability to 8 bytes
        let base = VFIOIOMMUType1Info.size
        if migrationCapability {
            // The migration capability's next: the DMA-available one, offsets from the buffer start.
            LittleEndianBytes.store(UInt32(base + availOffset), into: &caps, at: 4)
        }
        var reply = VFIOIOMMUType1Info(
            argsz: info.argsz, flags: VFIOUAPI.iommuInfoPageSizes | VFIOUAPI.iommuInfoCaps,
            iovaPageSizes: ~(SimulatedIOMMUDomain.pageSize - 1))
        let needed = UInt32(base + caps.count)
        if info.argsz < needed {
            reply.argsz = needed
        } else {
            reply.capOffset = UInt32(base)
            guard buffer.count >= Int(needed) else { return .failure(.badAddress) }
            for (index, byte) in caps.enumerated() { buffer[base + index] = byte }
        }
        let count = min(Int(info.argsz), base, buffer.count)
        for (index, byte) in reply.bytes.prefix(count).enumerated() { buffer[index] = byte }
        return .success(0)
    }

    /// vfio_dma_do_map: argsz ≥ 32, known flags, READ or WRITE, 4 KiB alignment, no overlap (EEXIST).
    private func mapDMA(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Int32, Errno> {
        guard let map = VFIOIOMMUType1DMAMap(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
        let known = VFIOUAPI.dmaMapRead | VFIOUAPI.dmaMapWrite
        guard map.argsz >= UInt32(VFIOIOMMUType1DMAMap.size), map.flags & ~known == 0, map.flags != 0 else {
            return .failure(.invalidArgument)
        }
        let mapping = SimulatedDMAMapping(
            iova: map.iova, hostAddress: map.vaddr, size: map.size, writable: map.flags & VFIOUAPI.dmaMapWrite != 0)
        return domain.map(mapping).map { 0 }
    }

    /// vfio_dma_do_unmap: argsz ≥ 24; the unmapped size comes back in `size`. The
    /// GET_DIRTY_BITMAP and ALL flags are not modelled (EINVAL).
    private func unmapDMA(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Int32, Errno> {
        guard var unmap = VFIOIOMMUType1DMAUnmap(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
        guard unmap.argsz >= UInt32(VFIOIOMMUType1DMAUnmap.size), unmap.flags == 0,
            (unmap.iova | unmap.size) % SimulatedIOMMUDomain.pageSize == 0
        else { return .failure(.invalidArgument) }
        switch domain.unmap(iova: unmap.iova, size: unmap.size) {
        case .failure(let errno): return .failure(errno)
        case .success(let unmapped):
            unmap.size = unmapped
            for (index, byte) in unmap.bytes.enumerated() { buffer[index] = byte }
            return .success(0)
        }
    }

    /// vfio_iommu_type1_dirty_pages: argsz ≥ 8; exactly one of START, STOP, GET_BITMAP; v2 only
    /// (EACCES). GET_BITMAP: argsz ≥ 48, the smallest page size, aligned non-empty range, a
    /// bitmap of at least the needed bytes and at most 256 MiB, tracking started, the range on
    /// mapping boundaries (EINVAL for each; also, as 6.12 answered on mtty, for a range with no
    /// mapping). Type1 marks what devices write through vfio_dma_rw (an emulated device's DMA).
    private func dirtyPages(_ buffer: UnsafeMutableRawBufferPointer, v2: Bool) -> Result<Int32, Errno> {
        guard buffer.count >= VFIOIOMMUType1DirtyBitmap.headerSize else { return .failure(.badAddress) }
        let argsz = LittleEndianBytes.load(UInt32.self, from: UnsafeRawBufferPointer(buffer), at: 0)
        let flags = LittleEndianBytes.load(UInt32.self, from: UnsafeRawBufferPointer(buffer), at: 4)
        let known = VFIOUAPI.dirtyPagesStart | VFIOUAPI.dirtyPagesStop | VFIOUAPI.dirtyPagesGetBitmap
        guard argsz >= 8, flags & ~known == 0, flags.nonzeroBitCount == 1 else { return .failure(.invalidArgument) }
        guard v2 else { return .failure(.permissionDenied) }
        switch flags {
        case VFIOUAPI.dirtyPagesStart:
            log.setEnabled(true)
            return .success(0)
        case VFIOUAPI.dirtyPagesStop:
            log.setEnabled(false)
            return .success(0)
        default:
            guard argsz >= UInt32(VFIOIOMMUType1DirtyBitmap.size),
                let get = VFIOIOMMUType1DirtyBitmap(bytes: UnsafeRawBufferPointer(buffer))
            else { return .failure(.invalidArgument) }
            let page = SimulatedIOMMUDomain.pageSize
            guard !get.iova.addingReportingOverflow(get.length).overflow, get.pageSize == page, get.iova % page == 0,
                get.length > 0, get.length % page == 0
            else { return .failure(.invalidArgument) }
            let pages = get.length / page
            let needed = (pages / 64 + (pages % 64 == 0 ? 0 : 1)) * 8
            guard get.bitmapSize > 0, get.bitmapSize <= VFIOUAPI.type1MaxDirtyBitmapSize, get.bitmapSize >= needed else {
                return .failure(.invalidArgument)
            }
            guard log.isEnabled, domain.coversWholeMappings(iova: get.iova, size: get.length) else { return .failure(.invalidArgument) }
            let words = log.readAndClear(iova: get.iova, length: get.length, pageSize: page)
            return storeBitmap(words, at: get.bitmapData).map { 0 }
        }
    }

}

/// A simulated type1 container of its own (no simulated host): a real fd, already holding a group
/// and set to type1v2, that a VMM maps guest memory into and attaches simulated devices to. Their
/// DMA writes (``SimulatedVFIODevice/dmaWrite(iova:bytes:)``) go through its mappings and its
/// memory accessor, and are logged while `VFIO_IOMMU_DIRTY_PAGES` tracking runs.
public final class SimulatedVFIOContainer: Sendable {
    let file: SimulatedType1ContainerFile
    private let fd: Mutex<Int32?>

    /// Opens the container. `migrationCapability` false models a type1 driver without dirty
    /// tracking (before Linux 5.8): no migration capability in GET_INFO, DIRTY_PAGES ENOTTY.
    public init(migrationCapability: Bool = true) throws(VFIOError) {
        file = SimulatedType1ContainerFile(migrationCapability: migrationCapability)
        file.makeReady()
        switch SimulatedFileTable.shared.open(file) {
        case .success(let opened): fd = Mutex(opened)
        case .failure(let errno):
            throw VFIOError.syscallFailed(operation: .open("simulated type1 container"), device: "container", errno: errno)
        }
    }

    deinit { close() }

    /// The container fd, or nil once closed.
    public var fileDescriptor: FileDescriptor? { fd.withLock { $0 }.map { FileDescriptor(rawValue: $0) } }

    /// The container as the VFIO layer speaks to it (through the simulated syscall seam).
    public var container: VFIOType1Container? {
        fileDescriptor.map { VFIOType1Container(fileDescriptor: $0, system: VFIOSystem.simulated) }
    }

    /// Attaches `device`: its DMA writes now go through this container's mappings.
    public func attach(_ device: SimulatedVFIODevice) {
        device.driver.attach(file.attachment)
    }

    /// Installs the function device DMA writes store through (nil: the direct store).
    public func setMemoryAccessor(_ accessor: SimulatedDMAMemoryAccessor?) { file.domain.setAccessor(accessor) }

    /// Closes the container fd.
    public func close() {
        guard
            let fd = fd.withLock({ fd -> Int32? in
                defer { fd = nil }
                return fd
            })
        else { return }
        _ = VFIOSystem.simulated.close(fd)
    }
}
