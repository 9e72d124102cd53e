import Synchronization
import SystemPackage
import VFIO

/// A started device DMA log: the ranges it watches and the 4 KiB pages written inside them.
struct SimulatedDMALog: Sendable {
    var ranges: [(iova: UInt64, last: UInt64)]
    /// The page size the driver chose (echoed in START's reply).
    var pageSize: UInt64
    var pages = Set<UInt64>()

    func watches(_ page: UInt64) -> Bool { ranges.contains { page >= $0.iova && page <= $0.last } }
}

extension SimulatedVFIODriver {
    /// Connects the device to a container or an IOAS/HWPT: its DMA goes through it from now on.
    func attach(_ attachment: SimulatedIOMMUAttachment) { iommu.withLock { $0 = attachment } }

    /// A DMA write of `bytes` at `iova`, as the device would issue it: translated and logged by
    /// the IOMMU it is attached to, and logged by the device itself inside its started ranges.
    /// EFAULT when the device is attached nowhere or a page is not mapped writable.
    func dmaWrite(iova: UInt64, bytes: [UInt8]) -> Result<Void, Errno> {
        guard let attachment = iommu.withLock({ $0 }) else { return .failure(.badAddress) }
        switch attachment.domain.dmaWrite(iova: iova, bytes: bytes, log: attachment.log) {
        case .failure(let errno): return .failure(errno)
        case .success(let pages):
            dmaLog.withLock { log in
                guard var started = log else { return }
                for page in pages where started.watches(page) { started.pages.insert(page) }
                log = started
            }
            return .success(())
        }
    }

    /// `VFIO_DEVICE_FEATURE` for DMA_LOGGING_START/STOP/REPORT, in vfio_main.c's order: ENOTTY
    /// without log ops, then vfio_check_feature (GET/SET permission, PROBE answers 0, payload
    /// size), then each feature's own checks.
    func dmaLogging(
        _ feature: VFIOFeature, header: VFIODeviceFeatureHeader, get: Bool, set: Bool, probe: Bool,
        buffer: UnsafeMutableRawBufferPointer
    ) -> Result<Int32, Errno> {
        guard configuration.dmaLogging else { return .failure(.inappropriateIOCTLForDevice) }
        let isReport = feature == .dmaLoggingReport
        if (get && !isReport) || (set && isReport) { return .failure(.invalidArgument) }
        if probe { return .success(0) }
        if !get && !set { return .failure(.invalidArgument) }
        let payloadSize =
            switch feature {
            case .dmaLoggingStart: VFIODMALoggingControl.size
            case .dmaLoggingReport: VFIODMALoggingReport.size
            default: 0
            }
        guard Int(header.argsz) - VFIODeviceFeatureHeader.size >= payloadSize else { return .failure(.invalidArgument) }
        guard buffer.count >= VFIODeviceFeatureHeader.size + payloadSize else { return .failure(.badAddress) }
        let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[VFIODeviceFeatureHeader.size...])
        switch feature {
        case .dmaLoggingStart: return startLogging(payload)
        case .dmaLoggingReport: return reportLogging(UnsafeRawBufferPointer(payload))
        default:
            // A STOP without a START is accepted (the core passes it to the driver, whose answer
            // is its own).
            dmaLog.withLock { $0 = nil }
            return .success(0)
        }
    }

    /// vfio_ioctl_device_feature_logging_start: 0 ranges EINVAL, more than LOG_MAX_RANGES E2BIG,
    /// unaligned EINVAL, overflowing EOVERFLOW, overlapping EINVAL; then the driver: a second
    /// START while one runs fails (EBUSY here: the errno is the driver's). The chosen page size
    /// is written back: the simulator logs at the requested one, at least 4 KiB.
    private func startLogging(_ payload: UnsafeMutableRawBufferPointer) -> Result<Int32, Errno> {
        guard var control = VFIODMALoggingControl(bytes: UnsafeRawBufferPointer(payload)) else { return .failure(.badAddress) }
        let count = Int(control.numRanges)
        guard count > 0 else { return .failure(.invalidArgument) }
        guard count <= VFIOUAPI.dmaLoggingMaxRanges else { return .failure(.argListTooLong) }
        let raw: [UInt8]
        switch loadUserBytes(at: control.ranges, count: count * VFIODMALoggingRange.size) {
        case .success(let bytes): raw = bytes
        case .failure(let errno): return .failure(errno)
        }
        let pageSize = control.pageSize
        var ranges: [(iova: UInt64, last: UInt64)] = []
        for index in 0..<count {
            guard let range = VFIODMALoggingRange(bytes: raw[(index * VFIODMALoggingRange.size)...]) else { return .failure(.badAddress) }
            // IS_ALIGNED with a page size of 0 divides by nothing: the kernel's mask test passes
            // only for 0 values; the simulator refuses a zero or non-power-of-two size outright.
            guard pageSize > 0, pageSize.nonzeroBitCount == 1, range.iova % pageSize == 0, range.length % pageSize == 0 else {
                return .failure(.invalidArgument)
            }
            guard !range.iova.addingReportingOverflow(range.length).overflow else { return .failure(.overflow) }
            guard range.length > 0 else { return .failure(.invalidArgument) }
            let last = range.iova + range.length - 1
            if ranges.contains(where: { $0.iova <= last && range.iova <= $0.last }) { return .failure(.invalidArgument) }
            ranges.append((range.iova, last))
        }
        let chosen = max(pageSize, SimulatedIOMMUDomain.pageSize)
        let started = dmaLog.withLock { log -> Bool in
            guard log == nil else { return false }
            log = SimulatedDMALog(ranges: ranges, pageSize: chosen)
            return true
        }
        guard started else { return .failure(.resourceBusy) }
        control.pageSize = chosen
        store(control.bytes, into: payload)
        return .success(0)
    }

    /// vfio_ioctl_device_feature_logging_report: page size < 4 KiB or not a power of two EINVAL,
    /// overflow EOVERFLOW; then the driver: no log started EINVAL (the simulator's choice: the uAPI
    /// says only "an error"); the configured failure
    /// (Debian 6.12: EOPNOTSUPP). Bits are set, never cleared, in the caller's bitmap; the range's
    /// log is cleared.
    private func reportLogging(_ payload: UnsafeRawBufferPointer) -> Result<Int32, Errno> {
        guard let report = VFIODMALoggingReport(bytes: payload) else { return .failure(.badAddress) }
        guard report.pageSize >= 4096, report.pageSize.nonzeroBitCount == 1 else { return .failure(.invalidArgument) }
        guard !report.iova.addingReportingOverflow(report.length).overflow else { return .failure(.overflow) }
        if let failure = configuration.dmaLoggingReportFailure { return .failure(failure) }
        guard report.length > 0 else { return .success(0) }
        let words = dmaLog.withLock { log -> [UInt64]? in
            guard var started = log else { return nil }
            let pages = report.length / report.pageSize + (report.length % report.pageSize == 0 ? 0 : 1)
            var words = [UInt64](repeating: 0, count: Int(pages / 64 + (pages % 64 == 0 ? 0 : 1)))
            let last = report.iova + report.length - 1
            let hits = started.pages.filter { $0 >= report.iova && $0 <= last }
            for page in hits {
                let bit = (page - report.iova) / report.pageSize
                words[Int(bit / 64)] |= 1 << (bit % 64)
            }
            started.pages.subtract(hits)
            log = started
            return words
        }
        guard let words else { return .failure(.invalidArgument) }
        return storeBitmap(words, at: report.bitmap).map { 0 }
    }
}
