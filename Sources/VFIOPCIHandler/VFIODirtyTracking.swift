// The adapters from the VFIO layer's dirty tracking to MigrationCore's protocols (VFIO does not
// import MigrationCore): a VFIO device as a `DMAWritingDevice`, and one `DirtyPageTracker` per
// kind — the device's DMA log, a type1 container's, an iommufd HWPT's.

import MigrationCore
import Synchronization
import SystemPackage
import VFIO

/// A VFIO device that may write guest memory by DMA, for the engine's choice of dirty tracking
/// (``/MigrationCore/DirtyTrackingPlan``): it offers its own DMA log when a PROBE says the driver
/// has one, and its container's or HWPT's IOMMU tracker when that tracks dirty pages.
public final class VFIODMADevice: DMAWritingDevice {
    public let dmaDeviceName: String
    private let logging: VFIODeviceLoggingTracker
    private let probe: @Sendable () throws(VFIOError) -> VFIODMALoggingSupport
    private let iommu: @Sendable () throws(VFIOError) -> (tracker: (any DirtyPageTracker)?, reason: String)

    /// A kernel device: its DMA log, and the tracker of the container (type1 with the migration
    /// capability) or the HWPT (allocated with dirty tracking at open) its DMA goes through —
    /// one shared object per container fd or HWPT.
    public convenience init(_ device: KernelVFIODevice) {
        let name = device.name
        self.init(
            client: device, name: name,
            iommu: { () throws(VFIOError) in
                if let container = device.type1Container { return try VFIOType1DirtyTracker.offer(for: container) }
                if let iommufd = device.iommufd {
                    guard let hwpt = device.dirtyTrackingHWPT else {
                        return (
                            nil,
                            "its IOMMU has no dirty tracking (IOMMU_HWPT_ALLOC with DIRTY_TRACKING was refused, or the VMM attached the device)"
                        )
                    }
                    return (VFIOIOMMUFDDirtyTracker.shared(iommufd: iommufd, hwptID: hwpt), "")
                }
                return (nil, "its no-IOMMU container tracks nothing")
            })
    }

    /// A kernel device whose IOMMU tracker the VMM supplies (nil: none), e.g. for a cdev the VMM
    /// attached to its own dirty-tracking HWPT, or a container it shares between devices.
    public convenience init(_ device: KernelVFIODevice, iommuTracker: (any DirtyPageTracker)?) {
        self.init(client: device, name: device.name, iommuTracker: iommuTracker)
    }

    /// Any client-backed device (a simulated one) with the IOMMU tracker of the container it is
    /// attached to, or nil and why not.
    package init(
        client device: some VFIOClientBackedDevice, name: String,
        iommu: @escaping @Sendable () throws(VFIOError) -> (tracker: (any DirtyPageTracker)?, reason: String)
    ) {
        self.dmaDeviceName = name
        let client = device.client
        self.probe = { () throws(VFIOError) in try client.dmaLoggingSupport() }
        self.logging = VFIODeviceLoggingTracker(client: client)
        self.iommu = iommu
    }

    /// A device whose IOMMU tracker the VMM gives (nil: none), e.g. a simulated device and
    /// the ``VFIOType1DirtyTracker`` of the container it is attached to.
    package convenience init(client device: some VFIOClientBackedDevice, name: String, iommuTracker: (any DirtyPageTracker)?) {
        self.init(client: device, name: name, iommu: { () throws(VFIOError) in (iommuTracker, "no IOMMU dirty tracker was given") })
    }

    /// A PROBE of DMA logging and a GET_INFO of the container: changes nothing.
    public func dirtyTrackingOffer() throws -> DirtyTrackingOffer {
        var offer = DirtyTrackingOffer()
        var reasons: [String] = []
        switch try probe() {
        case .supported: offer.deviceLogging = logging
        case .unsupported(let errno): reasons.append("no device DMA logging (PROBE of DMA_LOGGING_START answered \(errno))")
        }
        let (tracker, reason) = try iommu()
        offer.iommu = tracker
        if tracker == nil { reasons.append("no IOMMU dirty tracking: \(reason)") }
        if offer.deviceLogging == nil, offer.iommu == nil {
            offer.unavailableReason = "\(dmaDeviceName): " + reasons.joined(separator: "; ")
        }
        return offer
    }
}

/// Page-aligned IOVA ranges for `ranges` (start rounded down, end up), in order.
func alignedRanges(_ ranges: [GuestMemoryRange], pageSize: UInt64, owner: String) throws -> [(iova: UInt64, length: UInt64)] {
    guard pageSize >= 4096, pageSize.nonzeroBitCount == 1 else {
        throw VFIOError.invalidRequest(
            operation: .startDMALogging, device: owner, detail: "page size \(pageSize) is not a power of two ≥ 4096")
    }
    return try ranges.map { range in
        guard let end = range.end, end <= UInt64.max - pageSize else {
            throw VFIOError.invalidRequest(operation: .startDMALogging, device: owner, detail: "range \(range) overflows")
        }
        let start = range.start - range.start % pageSize
        let alignedEnd = end % pageSize == 0 ? end : end + (pageSize - end % pageSize)
        return (start, alignedEnd - start)
    }
}

/// A VFIO bitmap at the kernel's page size as a MigrationCore bitmap at `pageSize`: a page is
/// dirty when any kernel page inside it is.
func dirtyPageBitmap(_ bitmap: VFIODirtyBitmap, pageSize: UInt64) -> DirtyPageBitmap {
    let range = GuestMemoryRange(start: bitmap.iova, length: bitmap.length)
    if bitmap.pageSize == pageSize { return DirtyPageBitmap(range: range, pageSize: pageSize, words: bitmap.words) }
    var result = DirtyPageBitmap(clean: range, pageSize: pageSize)
    for address in bitmap.dirtyAddresses {
        var page = address - (address - bitmap.iova) % pageSize
        let end = address &+ bitmap.pageSize
        while page < end, range.contains(page) {
            result.markDirty(guestAddress: page)
            page &+= pageSize
        }
    }
    return result
}

/// What a VFIO tracker holds between start and stop: the page-aligned IOVA ranges, the page
/// size the engine asked for, and how the kernel is read (its page size, its bitmap limit).
struct VFIOTrackingSession: Sendable {
    var ranges: [(iova: UInt64, length: UInt64)]
    var pageSize: UInt64
    var kernelPageSize: UInt64
    var maxBitmapBytes: UInt64

    /// One read per range, split so that no bitmap exceeds `maxBitmapBytes`, each folded into
    /// the tracker's page size.
    func collect(
        _ read: (_ iova: UInt64, _ length: UInt64, _ pageSize: UInt64, _ maxBitmapBytes: UInt64) throws -> VFIODirtyBitmap
    ) throws -> [DirtyPageBitmap] {
        var bitmaps: [DirtyPageBitmap] = []
        for range in ranges {
            for piece in VFIODirtyBitmap.chunks(iova: range.iova, length: range.length, pageSize: kernelPageSize, maxBytes: maxBitmapBytes)
            {
                bitmaps.append(dirtyPageBitmap(try read(piece.iova, piece.length, kernelPageSize, maxBitmapBytes), pageSize: pageSize))
            }
        }
        return bitmaps
    }
}

extension Mutex where Value == VFIOTrackingSession? {
    /// Ends the session; true when one was running (the caller then stops the kernel's tracking).
    func end() -> Bool {
        withLock { session in
            defer { session = nil }
            return session != nil
        }
    }
}

/// One tracker object per key (a container fd, an HWPT): what every device sharing it is given.
struct SharedTrackers<Key: Hashable & Sendable, Tracker: AnyObject & Sendable>: ~Copyable {
    private let trackers = Mutex<[Key: Tracker]>([:])

    func tracker(for key: Key, make: () -> Tracker) -> Tracker {
        trackers.withLock { trackers in
            if let tracker = trackers[key] { return tracker }
            let tracker = make()
            trackers[key] = tracker
            return tracker
        }
    }
}

/// One device's DMA log (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`) as a tracker.
public final class VFIODeviceLoggingTracker: DirtyPageTracker {
    public var kind: DirtyTrackingKind { .deviceDMALogging }
    public let trackerName: String
    private let client: VFIODeviceClient
    private let session = Mutex<VFIOTrackingSession?>(nil)

    package init(client: VFIODeviceClient) {
        self.client = client
        self.trackerName = client.name
    }

    /// START over the page-aligned ranges (at most 256: the kernel's LOG_MAX_RANGES), then one
    /// REPORT of the first page: a kernel can accept START and refuse every REPORT (Debian's 6.12
    /// answers EOPNOTSUPP), and that must stop the migration before it sends anything.
    public func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws {
        let aligned = try alignedRanges(ranges, pageSize: pageSize, owner: trackerName)
        _ = try client.startDMALogging(ranges: aligned, pageSize: pageSize)
        session.withLock {
            $0 = VFIOTrackingSession(
                ranges: aligned, pageSize: pageSize, kernelPageSize: pageSize, maxBitmapBytes: VFIOUAPI.type1MaxDirtyBitmapSize)
        }
        if let first = aligned.first {
            do {
                _ = try client.reportDMALogging(iova: first.iova, length: pageSize, pageSize: pageSize, maxBitmapBytes: 8)
            } catch {
                stopTracking()
                throw error
            }
        }
    }

    /// One REPORT per range (split so no bitmap exceeds 256 MiB), read-and-clear.
    public func collectDirtyPages() throws -> [DirtyPageBitmap] {
        try session.withLock({ $0 })?.collect { iova, length, pageSize, maxBytes in
            try client.reportDMALogging(iova: iova, length: length, pageSize: pageSize, maxBitmapBytes: maxBytes)
        } ?? []
    }

    public func stopTracking() {
        if session.end() { try? client.stopDMALogging() }
    }
}

/// A type1 container's IOMMU dirty tracking (`VFIO_IOMMU_DIRTY_PAGES`) as a tracker: one object
/// per container, whatever number of devices share it.
public final class VFIOType1DirtyTracker: DirtyPageTracker {
    public var kind: DirtyTrackingKind { .iommu }
    public var trackerName: String { container.name }
    public let container: VFIOType1Container
    private let session = Mutex<VFIOTrackingSession?>(nil)

    public init(container: VFIOType1Container) { self.container = container }

    private static let registry = SharedTrackers<Int32, VFIOType1DirtyTracker>()

    /// The tracker of the container at `container`'s fd: the same object for every device that
    /// maps through it. Keyed by the fd number: a VMM that closes a container and opens another
    /// on the same number creates a fresh ``VFIOType1DirtyTracker`` for it instead.
    public static func shared(for container: VFIOType1Container) -> VFIOType1DirtyTracker {
        registry.tracker(for: container.fileDescriptor.rawValue) { VFIOType1DirtyTracker(container: container) }
    }

    /// The shared tracker when GET_INFO has the migration capability, else nil and why.
    static func offer(for container: VFIOType1Container) throws(VFIOError) -> (tracker: (any DirtyPageTracker)?, reason: String) {
        guard try container.info().migration != nil else {
            return (nil, "\(container.name) has no migration capability in VFIO_IOMMU_GET_INFO")
        }
        return (shared(for: container), "")
    }

    /// The largest IOMMU page size a container's migration capability may log at (the largest
    /// IOMMU page of x86 and arm64): the ranges are widened to it and folded back at the VMM's
    /// page size, so a larger one would make the folded bitmaps as large as the kernel says.
    static let maxKernelPageSize: UInt64 = 1 << 30

    /// GET_INFO (the capability's page size and bitmap limit), then DIRTY_PAGES START. The
    /// capability is the kernel's word: a page size outside 4 KiB…1 GiB, or a bitmap limit
    /// under one u64 word (no range could be read), is refused before anything starts.
    public func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws {
        guard let capability = try container.info().migration, let kernelPage = capability.pageSize else {
            throw VFIOError.featureUnsupported(operation: .startDirtyPages, device: container.name, errno: .inappropriateIOCTLForDevice)
        }
        guard kernelPage >= 4096, kernelPage <= Self.maxKernelPageSize, capability.maxDirtyBitmapSize >= 8 else {
            throw VFIOError.unexpectedReply(
                operation: .iommuGetInfo, device: container.name,
                detail:
                    "migration capability with page size \(kernelPage) and max_dirty_bitmap_size \(capability.maxDirtyBitmapSize) "
                    + "(a page of 4 KiB to 1 GiB and a bitmap of at least 8 bytes expected)")
        }
        let aligned = try alignedRanges(ranges, pageSize: max(pageSize, kernelPage), owner: container.name)
        try container.startDirtyTracking()
        session.withLock {
            $0 = VFIOTrackingSession(
                ranges: aligned, pageSize: pageSize, kernelPageSize: kernelPage, maxBitmapBytes: capability.maxDirtyBitmapSize)
        }
    }

    /// GET_BITMAP per range at the container's page size (split by `max_dirty_bitmap_size`),
    /// folded into the tracker's page size.
    public func collectDirtyPages() throws -> [DirtyPageBitmap] {
        try session.withLock({ $0 })?.collect { iova, length, pageSize, maxBytes in
            try container.dirtyBitmap(iova: iova, length: length, pageSize: pageSize, maxBitmapBytes: maxBytes)
        } ?? []
    }

    public func stopTracking() {
        if session.end() { try? container.stopDirtyTracking() }
    }
}

/// An iommufd HWPT's dirty tracking (`IOMMU_HWPT_SET_DIRTY_TRACKING`,
/// `IOMMU_HWPT_GET_DIRTY_BITMAP`) as a tracker: one object per HWPT.
public final class VFIOIOMMUFDDirtyTracker: DirtyPageTracker {
    public var kind: DirtyTrackingKind { .iommu }
    public var trackerName: String { "\(iommufd.name) HWPT \(hwptID)" }
    public let iommufd: VFIOIOMMUFD
    public let hwptID: UInt32
    private let session = Mutex<VFIOTrackingSession?>(nil)

    public init(iommufd: VFIOIOMMUFD, hwptID: UInt32) { (self.iommufd, self.hwptID) = (iommufd, hwptID) }

    private struct Key: Hashable {
        var fd: Int32
        var hwpt: UInt32
    }

    private static let registry = SharedTrackers<Key, VFIOIOMMUFDDirtyTracker>()

    /// The tracker of HWPT `hwptID` in `iommufd`: the same object for every device attached to it.
    public static func shared(iommufd: VFIOIOMMUFD, hwptID: UInt32) -> VFIOIOMMUFDDirtyTracker {
        registry.tracker(for: Key(fd: iommufd.fileDescriptor.rawValue, hwpt: hwptID)) {
            VFIOIOMMUFDDirtyTracker(iommufd: iommufd, hwptID: hwptID)
        }
    }

    public func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws {
        let aligned = try alignedRanges(ranges, pageSize: pageSize, owner: trackerName)
        try iommufd.setDirtyTracking(hwptID: hwptID, enabled: true)
        session.withLock {
            $0 = VFIOTrackingSession(
                ranges: aligned, pageSize: pageSize, kernelPageSize: pageSize, maxBitmapBytes: VFIOUAPI.type1MaxDirtyBitmapSize)
        }
    }

    /// GET_DIRTY_BITMAP per range (split so no bitmap exceeds 256 MiB), read-and-clear.
    public func collectDirtyPages() throws -> [DirtyPageBitmap] {
        try session.withLock({ $0 })?.collect { iova, length, pageSize, _ in
            try iommufd.dirtyBitmap(hwptID: hwptID, iova: iova, length: length, pageSize: pageSize)
        } ?? []
    }

    public func stopTracking() {
        if session.end() { try? iommufd.setDirtyTracking(hwptID: hwptID, enabled: false) }
    }
}
