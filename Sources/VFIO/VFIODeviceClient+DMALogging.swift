import SystemPackage

/// Whether a device implements device dirty tracking (DMA logging, `VFIO_DEVICE_FEATURE`
/// indexes 6–8, since Linux 6.1), as a PROBE answered.
public enum VFIODMALoggingSupport: Sendable, Hashable {
    /// The device logs the pages its DMA writes (its driver has log ops: mlx5 with firmware
    /// support, pds, mtty).
    case supported
    /// The device has no DMA logging: the PROBE failed with this errno (ENOTTY, or EINVAL from
    /// an older kernel).
    case unsupported(Errno)
}

extension VFIODeviceClient {
    /// `VFIO_DEVICE_FEATURE` with `PROBE | SET | DMA_LOGGING_START` and no payload: the kernel
    /// answers 0 when the driver has log ops and ENOTTY otherwise, without reading a payload or
    /// starting anything (vfio-uapi-spec §1.2, rule 4). Not cached: nothing else depends on it.
    package func dmaLoggingSupport() throws(VFIOError) -> VFIODMALoggingSupport {
        try withDevice(.probeDMALogging) { (fd) throws(VFIOError) -> VFIODMALoggingSupport in
            let operation = VFIOUAPI.featureProbe | VFIOUAPI.featureSet
            switch feature(fd, .dmaLoggingStart, operation, payload: []) {
            case .success: return .supported
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice || errno == .invalidArgument:
                return .unsupported(errno)
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .probeDMALogging, device: name, errno: errno)
            }
        }
    }
}

extension VFIODeviceClient {
    /// `VFIO_DEVICE_FEATURE` SET `DMA_LOGGING_START` with `ranges` (IOVA, length) and a page-size
    /// hint; returns the page size the driver chose (written back into `page_size`). Checked first,
    /// as vfio_main.c checks (vfio_ioctl_device_feature_logging_start): 1 to `LOG_MAX_RANGES`
    /// (256) ranges, each aligned to the page size and not overflowing.
    package func startDMALogging(ranges: [(iova: UInt64, length: UInt64)], pageSize: UInt64) throws(VFIOError) -> UInt64 {
        guard !ranges.isEmpty, ranges.count <= VFIOUAPI.dmaLoggingMaxRanges else {
            throw VFIOError.invalidRequest(
                operation: .startDMALogging, device: name,
                detail: "\(ranges.count) ranges (the kernel takes 1 to \(VFIOUAPI.dmaLoggingMaxRanges))")
        }
        for range in ranges {
            if case .failure(let problem) = VFIODirtyBitmap.wordCount(
                iova: range.iova, length: range.length, pageSize: pageSize, maxBytes: .max)
            {
                throw VFIOError.invalidRequest(operation: .startDMALogging, device: name, detail: problem.description)
            }
        }
        var rangeBytes: [UInt8] = []
        for range in ranges { rangeBytes += VFIODMALoggingRange(iova: range.iova, length: range.length).bytes }
        let chosen = try withDevice(.startDMALogging) { (fd) throws(VFIOError) -> UInt64 in
            let result = rangeBytes.withUnsafeBytes { rangesBuffer -> Result<[UInt8], Errno> in
                let pointer = UInt64(UInt(bitPattern: rangesBuffer.baseAddress))
                let control = VFIODMALoggingControl(pageSize: pageSize, numRanges: UInt32(ranges.count), ranges: pointer)
                return feature(fd, .dmaLoggingStart, VFIOUAPI.featureSet, payload: control.bytes)
            }
            switch result {
            case .success(let payload):
                return VFIODMALoggingControl(bytes: payload)?.pageSize ?? 0
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice:
                throw VFIOError.featureUnsupported(operation: .startDMALogging, device: name, errno: errno)
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .startDMALogging, device: name, errno: errno)
            }
        }
        // The driver's page size is only a fact about its log (reports use any power of two): a
        // value that is none means the answer cannot be trusted, so logging is stopped again.
        guard chosen > 0, chosen.nonzeroBitCount == 1 else {
            try? stopDMALogging()
            throw VFIOError.unexpectedReply(
                operation: .startDMALogging, device: name, detail: "the driver chose page size \(chosen), not a power of two")
        }
        return chosen
    }

    /// `VFIO_DEVICE_FEATURE` SET `DMA_LOGGING_STOP` (no payload).
    package func stopDMALogging() throws(VFIOError) {
        try withDevice(.stopDMALogging) { (fd) throws(VFIOError) in
            switch feature(fd, .dmaLoggingStop, VFIOUAPI.featureSet, payload: []) {
            case .success: return
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice:
                throw VFIOError.featureUnsupported(operation: .stopDMALogging, device: name, errno: errno)
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .stopDMALogging, device: name, errno: errno)
            }
        }
    }

    /// `VFIO_DEVICE_FEATURE` GET `DMA_LOGGING_REPORT` of one range into a zeroed bitmap the
    /// kernel sizes from `length / pageSize` (it is given no size): bounded here to
    /// `maxBitmapBytes` before it is allocated. Reading clears the range's log.
    package func reportDMALogging(iova: UInt64, length: UInt64, pageSize: UInt64, maxBitmapBytes: UInt64) throws(VFIOError)
        -> VFIODirtyBitmap
    {
        // vfio_ioctl_device_feature_logging_report: page_size ≥ 4 KiB and a power of two.
        let words: Int
        switch VFIODirtyBitmap.wordCount(iova: iova, length: length, pageSize: pageSize, minimumPageSize: 4096, maxBytes: maxBitmapBytes) {
        case .success(let count): words = count
        case .failure(let problem):
            throw VFIOError.invalidRequest(operation: .reportDMALogging, device: name, detail: problem.description)
        }
        var bitmap = [UInt64](repeating: 0, count: words)
        try withDevice(.reportDMALogging) { (fd) throws(VFIOError) in
            let result = bitmap.withUnsafeMutableBytes { buffer -> Result<[UInt8], Errno> in
                let pointer = UInt64(UInt(bitPattern: buffer.baseAddress))
                let report = VFIODMALoggingReport(iova: iova, length: length, pageSize: pageSize, bitmap: pointer)
                return feature(fd, .dmaLoggingReport, VFIOUAPI.featureGet, payload: report.bytes)
            }
            switch result {
            case .success: return
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice:
                throw VFIOError.featureUnsupported(operation: .reportDMALogging, device: name, errno: errno)
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .reportDMALogging, device: name, errno: errno)
            }
        }
        return VFIODirtyBitmap(iova: iova, length: length, pageSize: pageSize, words: bitmap)
    }
}

/// A device reached through the VFIO uAPI: the one implementation of the migration calls
/// (``VFIOMigrationDevice``) and of DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`) behind the
/// kernel-backed and the simulated device — both talk to the device through the same client;
/// only the fd differs.
public protocol VFIOUAPIDevice: VFIOMigrationDevice {
    /// The device's uAPI client.
    var uapi: VFIODeviceUAPI { get }
}

/// The handle ``VFIOUAPIDevice`` gives its calls: the device's uAPI client.
public struct VFIODeviceUAPI: Sendable {
    let client: VFIODeviceClient

    package init(client: VFIODeviceClient) { self.client = client }
}

extension VFIOUAPIDevice {
    public func migrationFlags() throws(VFIOError) -> VFIOMigrationFlags? { try uapi.client.migrationFlags() }

    public func deviceState() throws(VFIOError) -> VFIODeviceState { try uapi.client.deviceState() }

    @discardableResult
    public func setState(_ state: VFIODeviceState) throws(VFIOError) -> VFIOMigrationDataFD? { try uapi.client.setState(state) }

    public func stopCopySize() throws(VFIOError) -> UInt64 { try uapi.client.stopCopySize() }

    public func reset() throws(VFIOError) { try uapi.client.reset() }

    public func enablePrecopyInfoV2() throws(VFIOError) -> Bool { try uapi.client.enablePrecopyInfoV2() }

    /// Whether the device offers DMA logging (device dirty tracking): a PROBE of
    /// `DMA_LOGGING_START`, which changes nothing on the device. Throws for errors other than
    /// the kernel's "unsupported" answers.
    public func dmaLoggingSupport() throws(VFIOError) -> VFIODMALoggingSupport { try uapi.client.dmaLoggingSupport() }

    /// Starts the device's DMA log over `ranges` (IOVA, length) at `pageSize`
    /// (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START`); returns the page size the driver chose.
    /// - Throws: ``VFIOError/featureUnsupported(operation:device:errno:)`` (ENOTTY: no log ops),
    ///   ``VFIOError/invalidRequest(operation:device:detail:)`` for ranges the kernel would refuse,
    ///   ``VFIOError/syscallFailed(operation:device:errno:)`` (EBUSY-style: already started, …).
    public func startDMALogging(ranges: [(iova: UInt64, length: UInt64)], pageSize: UInt64) throws(VFIOError) -> UInt64 {
        try uapi.client.startDMALogging(ranges: ranges, pageSize: pageSize)
    }

    /// Stops the device's DMA log (`VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`).
    public func stopDMALogging() throws(VFIOError) { try uapi.client.stopDMALogging() }

    /// Reads and clears the log of `[iova, iova + length)` at `pageSize` (any power of two ≥ 4 KiB;
    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`). The bitmap is refused before allocation when
    /// larger than `maxBitmapBytes` (default 256 MiB).
    public func reportDMALogging(
        iova: UInt64, length: UInt64, pageSize: UInt64, maxBitmapBytes: UInt64 = VFIOUAPI.type1MaxDirtyBitmapSize
    ) throws(VFIOError) -> VFIODirtyBitmap {
        try uapi.client.reportDMALogging(iova: iova, length: length, pageSize: pageSize, maxBitmapBytes: maxBitmapBytes)
    }
}

extension KernelVFIODevice: VFIOUAPIDevice {
    public var uapi: VFIODeviceUAPI { VFIODeviceUAPI(client: client) }
}
