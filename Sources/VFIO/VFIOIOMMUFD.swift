import SystemPackage

/// An iommufd (/dev/iommu): IOAS mappings and hardware page tables (HWPTs) with IOMMU dirty
/// tracking (`IOMMU_HWPT_ALLOC` with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`,
/// `IOMMU_HWPT_SET_DIRTY_TRACKING`, `IOMMU_HWPT_GET_DIRTY_BITMAP`, Linux 6.7).
///
/// It does not own the fd: the device that opened it (or the VMM) closes it.
public final class VFIOIOMMUFD: Sendable {
    public let fileDescriptor: FileDescriptor
    /// The name used in errors: "iommufd (fd N)".
    public let name: String
    package let system: any VFIOSyscalls

    /// An iommufd the caller keeps open for as long as this object is used.
    public convenience init(fileDescriptor: FileDescriptor) {
        self.init(fileDescriptor: fileDescriptor, system: VFIOSystem.live)
    }

    package init(fileDescriptor: FileDescriptor, system: any VFIOSyscalls) {
        self.fileDescriptor = fileDescriptor
        self.name = "iommufd (fd \(fileDescriptor.rawValue))"
        self.system = system
    }

    /// The ioctl `request` with `argument`, which then holds the kernel's answer.
    private func call<Layout: VFIOFixedLayout>(_ request: UInt, _ argument: inout Layout, _ operation: VFIOOperation) throws(VFIOError) {
        switch system.ioctlRestarting(fileDescriptor.rawValue, request, layout: &argument) {
        case .success: return
        case .failure(let errno) where errno == .notSupported || errno == .inappropriateIOCTLForDevice:
            // iommufd's convention (include/uapi/linux/iommufd.h): EOPNOTSUPP for a known field
            // with a value the kernel (here: the IOMMU) does not support, ENOTTY for an ioctl
            // the kernel does not have.
            throw VFIOError.featureUnsupported(operation: operation, device: name, errno: errno)
        case .failure(let errno):
            throw VFIOError.syscallFailed(operation: operation, device: name, errno: errno)
        }
    }

    /// `IOMMU_IOAS_MAP` with a fixed IOVA: `length` bytes of this process at `hostAddress` appear
    /// at `iova` in IOAS `ioasID`, readable and (unless `writable` is false) writable.
    public func mapIOAS(_ ioasID: UInt32, iova: UInt64, hostAddress: UInt64, length: UInt64, writable: Bool = true) throws(VFIOError) {
        guard length > 0, !iova.addingReportingOverflow(length - 1).overflow, !hostAddress.addingReportingOverflow(length - 1).overflow
        else {
            throw VFIOError.invalidRequest(operation: .mapIOAS, device: name, detail: "empty or overflowing mapping of \(length) bytes")
        }
        let flags = VFIOUAPI.ioasMapFixedIOVA | VFIOUAPI.ioasMapReadable | (writable ? VFIOUAPI.ioasMapWriteable : 0)
        var map = IOMMUIOASMap(flags: flags, ioasID: ioasID, userVA: hostAddress, length: length, iova: iova)
        try call(VFIOUAPI.iommuIOASMap, &map, .mapIOAS)
    }

    /// `IOMMU_IOAS_UNMAP` of `[iova, iova + length)`; returns the bytes unmapped.
    @discardableResult
    public func unmapIOAS(_ ioasID: UInt32, iova: UInt64, length: UInt64) throws(VFIOError) -> UInt64 {
        var unmap = IOMMUIOASUnmap(ioasID: ioasID, iova: iova, length: length)
        try call(VFIOUAPI.iommuIOASUnmap, &unmap, .unmapIOAS)
        let unmapped = unmap.length
        guard unmapped <= length else {
            throw VFIOError.unexpectedReply(operation: .unmapIOAS, device: name, detail: "\(unmapped) bytes unmapped of \(length) asked")
        }
        return unmapped
    }

    /// `IOMMU_HWPT_ALLOC` for device `deviceID` (its `out_devid` from `VFIO_DEVICE_BIND_IOMMUFD`)
    /// over IOAS `ioasID`; with `dirtyTracking`, the IOMMU must support dirty tracking
    /// (EOPNOTSUPP otherwise: ``VFIOError/featureUnsupported(operation:device:errno:)``).
    /// Returns the HWPT id, to attach the device to.
    public func allocateHWPT(deviceID: UInt32, ioasID: UInt32, dirtyTracking: Bool) throws(VFIOError) -> UInt32 {
        var alloc = IOMMUHWPTAlloc(flags: dirtyTracking ? VFIOUAPI.hwptAllocDirtyTracking : 0, devID: deviceID, ptID: ioasID)
        try call(VFIOUAPI.iommuHWPTAlloc, &alloc, .allocateHWPT)
        guard alloc.outHWPTID != 0 else {
            throw VFIOError.unexpectedReply(operation: .allocateHWPT, device: name, detail: "no HWPT id in the reply")
        }
        return alloc.outHWPTID
    }

    /// `IOMMU_HWPT_SET_DIRTY_TRACKING`: turns the HWPT's dirty tracking on or off (EOPNOTSUPP for
    /// an HWPT allocated without `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`).
    public func setDirtyTracking(hwptID: UInt32, enabled: Bool) throws(VFIOError) {
        var request = IOMMUHWPTSetDirtyTracking(flags: enabled ? VFIOUAPI.hwptDirtyTrackingEnable : 0, hwptID: hwptID)
        try call(VFIOUAPI.iommuHWPTSetDirtyTracking, &request, .setHWPTDirtyTracking)
    }

    /// `IOMMU_HWPT_GET_DIRTY_BITMAP` of `[iova, iova + length)` at `pageSize`, read-and-clear. The
    /// kernel sizes the bitmap from `length / pageSize` (it is given no size): bounded here by
    /// `maxBitmapBytes` before it is allocated.
    public func dirtyBitmap(
        hwptID: UInt32, iova: UInt64, length: UInt64, pageSize: UInt64, maxBitmapBytes: UInt64 = VFIOUAPI.type1MaxDirtyBitmapSize
    ) throws(VFIOError) -> VFIODirtyBitmap {
        let words: Int
        switch VFIODirtyBitmap.wordCount(iova: iova, length: length, pageSize: pageSize, maxBytes: maxBitmapBytes) {
        case .success(let count): words = count
        case .failure(let problem):
            throw VFIOError.invalidRequest(operation: .getHWPTDirtyBitmap, device: name, detail: problem.description)
        }
        var bitmap = [UInt64](repeating: 0, count: words)
        let failure = bitmap.withUnsafeMutableBytes { buffer -> VFIOError? in
            var request = IOMMUHWPTGetDirtyBitmap(
                hwptID: hwptID, iova: iova, length: length, pageSize: pageSize, data: UInt64(UInt(bitPattern: buffer.baseAddress)))
            do throws(VFIOError) {
                try call(VFIOUAPI.iommuHWPTGetDirtyBitmap, &request, .getHWPTDirtyBitmap)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
        return VFIODirtyBitmap(iova: iova, length: length, pageSize: pageSize, words: bitmap)
    }
}
