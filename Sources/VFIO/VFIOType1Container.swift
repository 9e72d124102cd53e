import SystemPackage

/// What `VFIO_IOMMU_GET_INFO` says about a type1 container.
public struct VFIOType1ContainerInfo: Sendable, Equatable {
    /// `iova_pgsizes`: the IOMMU page sizes (bit n set: 2^n bytes).
    public var iovaPageSizes: UInt64
    /// The migration capability (`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`): present when the
    /// container logs dirty pages (kernels since 5.8). Nil: no IOMMU dirty tracking here.
    public var migration: VFIOType1MigrationCapability?
    /// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`: how many more mappings the container takes.
    public var dmaMappingsAvailable: UInt32?
    /// The capability ids of the chain, in chain order.
    public var capabilityIDs: [UInt16]

    public init(
        iovaPageSizes: UInt64, migration: VFIOType1MigrationCapability?, dmaMappingsAvailable: UInt32?, capabilityIDs: [UInt16]
    ) {
        self.iovaPageSizes = iovaPageSizes
        self.migration = migration
        self.dmaMappingsAvailable = dmaMappingsAvailable
        self.capabilityIDs = capabilityIDs
    }
}

/// The type1 migration capability: the page sizes the container logs at and the largest bitmap
/// one `GET_BITMAP` takes.
public struct VFIOType1MigrationCapability: Sendable, Equatable {
    /// `pgsize_bitmap` (the kernel reports its smallest IOMMU page size alone).
    public var pageSizeBitmap: UInt64
    /// `max_dirty_bitmap_size` in bytes (256 MiB on Linux).
    public var maxDirtyBitmapSize: UInt64

    public init(pageSizeBitmap: UInt64, maxDirtyBitmapSize: UInt64) {
        self.pageSizeBitmap = pageSizeBitmap
        self.maxDirtyBitmapSize = maxDirtyBitmapSize
    }

    /// The page size `GET_BITMAP` must be asked for: the smallest in the bitmap (nil when empty).
    public var pageSize: UInt64? { pageSizeBitmap == 0 ? nil : 1 << UInt64(pageSizeBitmap.trailingZeroBitCount) }
}

/// A type1 (`VFIO_TYPE1v2_IOMMU`) container fd: where a VMM maps guest memory for its devices'
/// DMA, and where the kernel logs the pages written through those mappings (the IOMMU dirty
/// tracking QEMU uses when devices have no DMA logging).
///
/// It does not own the fd: the device that opened the container (or the VMM) closes it.
public final class VFIOType1Container: Sendable {
    /// The container fd (/dev/vfio/vfio after `VFIO_SET_IOMMU`).
    public let fileDescriptor: FileDescriptor
    /// The name used in errors: "type1 container (fd N)".
    public let name: String
    package let system: any VFIOSyscalls

    /// The largest `VFIO_IOMMU_GET_INFO` reply accepted (a capability chain is a few dozen bytes).
    public static let maxInfoSize: UInt32 = 64 << 10
    /// The most capabilities walked in one chain.
    public static let maxCapabilities = 64

    /// A container fd the caller keeps open for as long as this object is used.
    public convenience init(fileDescriptor: FileDescriptor) {
        self.init(fileDescriptor: fileDescriptor, system: VFIOSystem.live)
    }

    package init(fileDescriptor: FileDescriptor, system: any VFIOSyscalls) {
        self.fileDescriptor = fileDescriptor
        self.name = "type1 container (fd \(fileDescriptor.rawValue))"
        self.system = system
    }

    private func ioctl(_ request: UInt, _ bytes: inout [UInt8]) -> Result<Int32, Errno> {
        system.ioctlRestarting(fileDescriptor.rawValue, request, bytes: &bytes)
    }

    private func ioctl<Layout: VFIOFixedLayout>(_ request: UInt, _ argument: inout Layout) -> Result<Int32, Errno> {
        system.ioctlRestarting(fileDescriptor.rawValue, request, layout: &argument)
    }

    // MARK: GET_INFO

    /// `VFIO_IOMMU_GET_INFO`, read twice when the capability chain does not fit 24 bytes (the
    /// kernel then answers the size it needs in `argsz`). Every offset of the chain is checked:
    /// a chain that loops, points backwards or runs past the reply is refused.
    public func info() throws(VFIOError) -> VFIOType1ContainerInfo {
        var size = UInt32(VFIOIOMMUType1Info.size)
        for _ in 0..<3 {
            var bytes = VFIOIOMMUType1Info(argsz: size).bytes + [UInt8](repeating: 0, count: Int(size) - VFIOIOMMUType1Info.size)
            if case .failure(let errno) = ioctl(VFIOUAPI.iommuGetInfo, &bytes) {
                throw VFIOError.syscallFailed(operation: .iommuGetInfo, device: name, errno: errno)
            }
            guard let reply = VFIOIOMMUType1Info(bytes: bytes) else {
                throw VFIOError.unexpectedReply(operation: .iommuGetInfo, device: name, detail: "short reply")
            }
            if reply.flags & VFIOUAPI.iommuInfoCaps != 0, reply.argsz > size {
                guard reply.argsz <= Self.maxInfoSize else {
                    throw VFIOError.unexpectedReply(
                        operation: .iommuGetInfo, device: name,
                        detail: "argsz \(reply.argsz) asked for, over the \(Self.maxInfoSize)-byte limit")
                }
                size = reply.argsz
                continue
            }
            return try parse(reply, bytes)
        }
        throw VFIOError.unexpectedReply(operation: .iommuGetInfo, device: name, detail: "argsz kept growing over three calls")
    }

    private func parse(_ reply: VFIOIOMMUType1Info, _ bytes: [UInt8]) throws(VFIOError) -> VFIOType1ContainerInfo {
        var info = VFIOType1ContainerInfo(
            iovaPageSizes: reply.flags & VFIOUAPI.iommuInfoPageSizes != 0 ? reply.iovaPageSizes : 0, migration: nil,
            dmaMappingsAvailable: nil, capabilityIDs: [])
        guard reply.flags & VFIOUAPI.iommuInfoCaps != 0, reply.capOffset != 0 else { return info }
        func refuse(_ detail: String) -> VFIOError {
            VFIOError.unexpectedReply(operation: .iommuGetInfo, device: name, detail: "capability chain: \(detail)")
        }
        var offset = Int(reply.capOffset)
        while offset != 0 {
            guard info.capabilityIDs.count < Self.maxCapabilities else { throw refuse("more than \(Self.maxCapabilities) capabilities") }
            guard offset >= VFIOIOMMUType1Info.size, offset <= bytes.count - VFIOInfoCapHeader.size,
                let header = VFIOInfoCapHeader(bytes: bytes[offset...])
            else { throw refuse("a capability at offset \(offset) lies outside the \(bytes.count)-byte reply") }
            info.capabilityIDs.append(header.id)
            switch header.id {
            case VFIOUAPI.type1CapMigration:
                guard offset <= bytes.count - VFIOIOMMUType1MigrationCap.size, let cap = VFIOIOMMUType1MigrationCap(bytes: bytes[offset...])
                else { throw refuse("the migration capability at \(offset) overruns the reply") }
                info.migration = VFIOType1MigrationCapability(
                    pageSizeBitmap: cap.pageSizeBitmap, maxDirtyBitmapSize: cap.maxDirtyBitmapSize)
            case VFIOUAPI.type1CapDMAAvail:
                guard offset <= bytes.count - VFIOIOMMUType1DMAAvailCap.size, let cap = VFIOIOMMUType1DMAAvailCap(bytes: bytes[offset...])
                else { throw refuse("the DMA-available capability at \(offset) overruns the reply") }
                info.dmaMappingsAvailable = cap.available
            default:
                break
            }
            let next = Int(header.next)
            // The kernel appends capabilities: each next lies after the one before. Anything else
            // (a loop, a pointer backwards) is refused, which also bounds the walk.
            guard next == 0 || next >= offset + VFIOInfoCapHeader.size else {
                throw refuse("capability \(header.id) at \(offset) points back to \(next)")
            }
            offset = next
        }
        return info
    }

    // MARK: Mappings

    /// `VFIO_IOMMU_MAP_DMA`: maps `size` bytes of this process at `hostAddress` to `iova`, readable
    /// and (unless `writable` is false) writable by the devices.
    public func mapDMA(iova: UInt64, hostAddress: UInt64, size: UInt64, writable: Bool = true) throws(VFIOError) {
        guard size > 0, !iova.addingReportingOverflow(size - 1).overflow, !hostAddress.addingReportingOverflow(size - 1).overflow else {
            throw VFIOError.invalidRequest(operation: .mapDMA, device: name, detail: "empty or overflowing mapping of \(size) bytes")
        }
        let flags = VFIOUAPI.dmaMapRead | (writable ? VFIOUAPI.dmaMapWrite : 0)
        var map = VFIOIOMMUType1DMAMap(flags: flags, vaddr: hostAddress, iova: iova, size: size)
        if case .failure(let errno) = ioctl(VFIOUAPI.iommuMapDMA, &map) {
            throw VFIOError.syscallFailed(operation: .mapDMA, device: name, errno: errno)
        }
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`; returns the bytes the kernel unmapped.
    @discardableResult
    public func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var unmap = VFIOIOMMUType1DMAUnmap(iova: iova, size: size)
        if case .failure(let errno) = ioctl(VFIOUAPI.iommuUnmapDMA, &unmap) {
            throw VFIOError.syscallFailed(operation: .unmapDMA, device: name, errno: errno)
        }
        let unmapped = unmap.size
        // The kernel unmaps whole mappings inside the range: never more than was asked.
        guard unmapped <= size else {
            throw VFIOError.unexpectedReply(operation: .unmapDMA, device: name, detail: "\(unmapped) bytes unmapped of \(size) asked")
        }
        return unmapped
    }

    // MARK: Dirty pages

    private func dirtyPages(_ flag: UInt32, _ operation: VFIOOperation) throws(VFIOError) {
        var bytes = Array(VFIOIOMMUType1DirtyBitmap(argsz: UInt32(VFIOIOMMUType1DirtyBitmap.headerSize), flags: flag).bytes.prefix(8))
        switch ioctl(VFIOUAPI.iommuDirtyPages, &bytes) {
        case .success: return
        case .failure(let errno) where errno == .inappropriateIOCTLForDevice:
            // vfio_iommu_type1_ioctl's default: a kernel without VFIO_IOMMU_DIRTY_PAGES, or a
            // no-IOMMU container.
            throw VFIOError.featureUnsupported(operation: operation, device: name, errno: errno)
        case .failure(let errno):
            throw VFIOError.syscallFailed(operation: operation, device: name, errno: errno)
        }
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` START: the kernel starts logging every mapping (again a no-op
    /// when already started).
    public func startDirtyTracking() throws(VFIOError) { try dirtyPages(VFIOUAPI.dirtyPagesStart, .startDirtyPages) }

    /// `VFIO_IOMMU_DIRTY_PAGES` STOP (a no-op when not started).
    public func stopDirtyTracking() throws(VFIOError) { try dirtyPages(VFIOUAPI.dirtyPagesStop, .stopDirtyPages) }

    /// `VFIO_IOMMU_DIRTY_PAGES` GET_BITMAP of `[iova, iova + length)` at `pageSize` (the
    /// migration capability's page size: the kernel accepts no other), read-and-clear. The range
    /// must start and end at mapping boundaries. The bitmap is bounded by `maxBitmapBytes`
    /// (the capability's `max_dirty_bitmap_size`) before it is allocated: split larger ranges
    /// with ``VFIODirtyBitmap/chunks(iova:length:pageSize:maxBytes:)``.
    public func dirtyBitmap(iova: UInt64, length: UInt64, pageSize: UInt64, maxBitmapBytes: UInt64) throws(VFIOError) -> VFIODirtyBitmap {
        let words: Int
        let limit = min(maxBitmapBytes, VFIOUAPI.type1MaxDirtyBitmapSize)
        switch VFIODirtyBitmap.wordCount(iova: iova, length: length, pageSize: pageSize, maxBytes: limit) {
        case .success(let count): words = count
        case .failure(let problem): throw VFIOError.invalidRequest(operation: .getDirtyBitmap, device: name, detail: problem.description)
        }
        var bitmap = [UInt64](repeating: 0, count: words)
        let result = bitmap.withUnsafeMutableBytes { buffer -> Result<Int32, Errno> in
            var request = VFIOIOMMUType1DirtyBitmap(
                argsz: UInt32(VFIOIOMMUType1DirtyBitmap.size), flags: VFIOUAPI.dirtyPagesGetBitmap, iova: iova, length: length,
                pageSize: pageSize, bitmapSize: UInt64(buffer.count), bitmapData: UInt64(UInt(bitPattern: buffer.baseAddress)))
            return ioctl(VFIOUAPI.iommuDirtyPages, &request)
        }
        switch result {
        case .success: return VFIODirtyBitmap(iova: iova, length: length, pageSize: pageSize, words: bitmap)
        case .failure(let errno) where errno == .inappropriateIOCTLForDevice:
            throw VFIOError.featureUnsupported(operation: .getDirtyBitmap, device: name, errno: errno)
        case .failure(let errno):
            throw VFIOError.syscallFailed(operation: .getDirtyBitmap, device: name, errno: errno)
        }
    }
}
