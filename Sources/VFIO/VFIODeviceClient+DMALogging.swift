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
    func dmaLoggingSupport() throws(VFIOError) -> VFIODMALoggingSupport {
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

extension KernelVFIODevice {
    /// Whether the device offers DMA logging (device dirty tracking): a PROBE of
    /// `DMA_LOGGING_START`, which changes nothing on the device. Throws for errors other than
    /// the kernel's "unsupported" answers.
    public func dmaLoggingSupport() throws(VFIOError) -> VFIODMALoggingSupport { try client.dmaLoggingSupport() }
}
