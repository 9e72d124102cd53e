import Synchronization
import SystemPackage
import VFIO

/// /dev/iommu as iommufd answers it (drivers/iommu/iommufd/): IOAS_ALLOC, IOAS_MAP/UNMAP,
/// HWPT_ALLOC (with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING` only for a device whose IOMMU tracks dirty
/// pages: ``SimulatedVFIOConfiguration/iommuDirtyTracking``, else EOPNOTSUPP as
/// hw_pagetable.c), HWPT_SET_DIRTY_TRACKING and HWPT_GET_DIRTY_BITMAP (EOPNOTSUPP on a HWPT
/// without dirty tracking, ENOENT for an unknown id). Errnos follow iommufd.h's convention.
package final class SimulatedIOMMUFDFile: SimulatedControlFile {
    struct HWPT {
        var ioas: UInt32
        /// The HWPT's dirty log: nil when allocated without dirty tracking.
        var log: SimulatedIOMMUDirtyLog?
    }

    struct State {
        var nextID: UInt32 = 1
        var ioas: [UInt32: SimulatedIOMMUDomain] = [:]
        var hwpts: [UInt32: HWPT] = [:]
        var devices: [UInt32: SimulatedVFIODriver] = [:]
    }

    let state = Mutex(State())
    let accessor: SimulatedDMAMemoryAccessor?

    init(accessor: SimulatedDMAMemoryAccessor? = nil) { self.accessor = accessor }

    /// `VFIO_DEVICE_BIND_IOMMUFD`: the device gets an id in this iommufd.
    func bind(_ driver: SimulatedVFIODriver) -> UInt32 {
        state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.devices[id] = driver
            return id
        }
    }

    /// What a device attached to IOAS or HWPT `id` reaches memory through.
    func attachment(for id: UInt32) -> SimulatedIOMMUAttachment? {
        state.withLock { state in
            if let domain = state.ioas[id] { return SimulatedIOMMUAttachment(domain: domain, log: nil) }
            if let hwpt = state.hwpts[id], let domain = state.ioas[hwpt.ioas] {
                return SimulatedIOMMUAttachment(domain: domain, log: hwpt.log)
            }
            return nil
        }
    }

    private func copy(_ bytes: [UInt8], to buffer: UnsafeMutableRawBufferPointer) {
        for (index, byte) in bytes.enumerated() where index < buffer.count { buffer[index] = byte }
    }

    package func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        guard case .buffer(let buffer) = argument else { return .failure(.inappropriateIOCTLForDevice) }
        let raw = UnsafeRawBufferPointer(buffer)
        // iommufd_fops_ioctl: the size in the first u32 must reach the struct's minimum (EINVAL).
        guard buffer.count >= 4 else { return .failure(.badAddress) }
        let size = LittleEndianBytes.load(UInt32.self, from: raw, at: 0)
        switch request {
        case VFIOUAPI.iommuIOASAlloc:
            guard let alloc = IOMMUIOASAlloc(bytes: raw) else { return .failure(.badAddress) }
            guard size >= UInt32(IOMMUIOASAlloc.size), alloc.flags == 0 else {
                return .failure(alloc.flags == 0 ? .invalidArgument : .notSupported)
            }
            let domain = SimulatedIOMMUDomain()
            domain.setAccessor(accessor)
            let id = state.withLock { state in
                let id = state.nextID
                state.nextID += 1
                state.ioas[id] = domain
                return id
            }
            copy(IOMMUIOASAlloc(size: alloc.size, flags: 0, outIOASID: id).bytes, to: buffer)
            return .success(0)
        case VFIOUAPI.iommuIOASMap:
            guard let map = IOMMUIOASMap(bytes: raw) else { return .failure(.badAddress) }
            guard size >= UInt32(IOMMUIOASMap.size) else { return .failure(.invalidArgument) }
            let known = VFIOUAPI.ioasMapFixedIOVA | VFIOUAPI.ioasMapReadable | VFIOUAPI.ioasMapWriteable
            // Automatic IOVA allocation is not modelled: FIXED_IOVA is required (EOPNOTSUPP).
            guard map.flags & ~known == 0, map.reserved == 0, map.flags & VFIOUAPI.ioasMapFixedIOVA != 0 else {
                return .failure(.notSupported)
            }
            guard let domain = state.withLock({ $0.ioas[map.ioasID] }) else { return .failure(.noSuchFileOrDirectory) }
            let mapping = SimulatedDMAMapping(
                iova: map.iova, hostAddress: map.userVA, size: map.length, writable: map.flags & VFIOUAPI.ioasMapWriteable != 0)
            return domain.map(mapping).map { 0 }
        case VFIOUAPI.iommuIOASUnmap:
            guard var unmap = IOMMUIOASUnmap(bytes: raw) else { return .failure(.badAddress) }
            guard size >= UInt32(IOMMUIOASUnmap.size) else { return .failure(.invalidArgument) }
            guard let domain = state.withLock({ $0.ioas[unmap.ioasID] }) else { return .failure(.noSuchFileOrDirectory) }
            switch domain.unmap(iova: unmap.iova, size: unmap.length) {
            case .failure(let errno): return .failure(errno)
            case .success(0): return .failure(.noSuchFileOrDirectory)
            case .success(let unmapped):
                unmap.length = unmapped
                copy(unmap.bytes, to: buffer)
                return .success(0)
            }
        case VFIOUAPI.iommuHWPTAlloc:
            return allocateHWPT(buffer, size: size)
        case VFIOUAPI.iommuHWPTSetDirtyTracking:
            guard let set = IOMMUHWPTSetDirtyTracking(bytes: raw) else { return .failure(.badAddress) }
            guard size >= UInt32(IOMMUHWPTSetDirtyTracking.size) else { return .failure(.invalidArgument) }
            guard set.flags & ~VFIOUAPI.hwptDirtyTrackingEnable == 0 else { return .failure(.notSupported) }
            guard let hwpt = state.withLock({ $0.hwpts[set.hwptID] }) else { return .failure(.noSuchFileOrDirectory) }
            guard let log = hwpt.log else { return .failure(.notSupported) }
            log.setEnabled(set.flags & VFIOUAPI.hwptDirtyTrackingEnable != 0)
            return .success(0)
        case VFIOUAPI.iommuHWPTGetDirtyBitmap:
            return dirtyBitmap(raw, size: size)
        default:
            return .failure(.inappropriateIOCTLForDevice)
        }
    }

    /// iommufd_hwpt_alloc for a kernel-managed HWPT over an IOAS: unknown flags EOPNOTSUPP, dirty
    /// tracking on an IOMMU without it EOPNOTSUPP, an unknown device or IOAS ENOENT.
    private func allocateHWPT(_ buffer: UnsafeMutableRawBufferPointer, size: UInt32) -> Result<Int32, Errno> {
        guard let alloc = IOMMUHWPTAlloc(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
        guard size >= 24 else { return .failure(.invalidArgument) }
        guard alloc.flags & ~VFIOUAPI.hwptAllocDirtyTracking == 0 else { return .failure(.notSupported) }
        let dirty = alloc.flags & VFIOUAPI.hwptAllocDirtyTracking != 0
        let answer = state.withLock { state -> Result<UInt32, Errno> in
            guard let driver = state.devices[alloc.devID], state.ioas[alloc.ptID] != nil else { return .failure(.noSuchFileOrDirectory) }
            if dirty, !driver.configuration.iommuDirtyTracking { return .failure(.notSupported) }
            let id = state.nextID
            state.nextID += 1
            let log = dirty ? SimulatedIOMMUDirtyLog() : nil
            state.hwpts[id] = HWPT(ioas: alloc.ptID, log: log)
            if let log, let domain = state.ioas[alloc.ptID] { domain.state.withLock { $0.logs.append(log) } }
            return .success(id)
        }
        switch answer {
        case .failure(let errno): return .failure(errno)
        case .success(let id):
            var reply = alloc
            reply.outHWPTID = id
            copy(reply.bytes.prefix(Int(min(size, UInt32(IOMMUHWPTAlloc.size)))).map { $0 }, to: buffer)
            return .success(0)
        }
    }

    /// iommufd_hwpt_get_dirty_bitmap: unknown flags or reserved bits EOPNOTSUPP, unknown HWPT
    /// ENOENT, no dirty ops EOPNOTSUPP, then iommufd_check_iova_range: overflow EOVERFLOW, a zero
    /// or non-power-of-two page size or a range not aligned to it EINVAL. Bits are relative to
    /// `iova`, set only (the caller zeroes the bitmap).
    private func dirtyBitmap(_ raw: UnsafeRawBufferPointer, size: UInt32) -> Result<Int32, Errno> {
        guard let get = IOMMUHWPTGetDirtyBitmap(bytes: raw) else { return .failure(.badAddress) }
        guard size >= UInt32(IOMMUHWPTGetDirtyBitmap.size) else { return .failure(.invalidArgument) }
        guard get.flags & ~VFIOUAPI.hwptGetDirtyBitmapNoClear == 0, get.reserved == 0 else { return .failure(.notSupported) }
        guard let hwpt = state.withLock({ $0.hwpts[get.hwptID] }) else { return .failure(.noSuchFileOrDirectory) }
        guard let log = hwpt.log else { return .failure(.notSupported) }
        guard get.length > 0, !get.iova.addingReportingOverflow(get.length - 1).overflow else { return .failure(.overflow) }
        let page = SimulatedIOMMUDomain.pageSize
        guard get.pageSize >= page, get.pageSize.nonzeroBitCount == 1, get.iova % get.pageSize == 0, get.length % get.pageSize == 0
        else { return .failure(.invalidArgument) }
        let keep = get.flags & VFIOUAPI.hwptGetDirtyBitmapNoClear != 0
        let words = log.readAndClear(iova: get.iova, length: get.length, pageSize: get.pageSize, keep: keep)
        return storeBitmap(words, at: get.data).map { 0 }
    }

}
