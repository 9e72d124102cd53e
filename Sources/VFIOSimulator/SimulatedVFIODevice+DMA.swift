import SystemPackage
import VFIO

extension SimulatedVFIODevice {
    /// The device writes `bytes` at `iova` by DMA, as a passthrough NIC or GPU would: through the
    /// mapping of the container or IOAS/HWPT it is attached to (``SimulatedVFIOContainer/attach(_:)``,
    /// or the open path of a `SimulatedVFIOHost`), stored by that domain's memory accessor, and
    /// marked in every tracker that runs: the device's DMA log (inside its started ranges) and the
    /// IOMMU's (type1 `DIRTY_PAGES`, HWPT dirty tracking).
    /// - Throws: `VFIOError.syscallFailed` with EFAULT when the device is attached nowhere or a page
    ///   is not mapped writable (nothing is written then), EBADF once closed.
    public func dmaWrite(iova: UInt64, bytes: [UInt8]) throws(VFIOError) {
        guard client.deviceFD != nil else {
            throw VFIOError.syscallFailed(operation: .write, device: name, errno: .badFileDescriptor)
        }
        if case .failure(let errno) = driver.dmaWrite(iova: iova, bytes: bytes) {
            throw VFIOError.unexpectedReply(
                operation: .write, device: name,
                detail: "DMA write of \(bytes.count) bytes at IOVA 0x\(String(iova, radix: 16)) faulted (\(errno))")
        }
    }

    /// Whether the device offers DMA logging: a PROBE of `DMA_LOGGING_START` (changes nothing).
    public func dmaLoggingSupport() throws(VFIOError) -> VFIODMALoggingSupport { try client.dmaLoggingSupport() }

    /// Starts the device's DMA log (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START`); returns the page
    /// size the driver chose.
    public func startDMALogging(ranges: [(iova: UInt64, length: UInt64)], pageSize: UInt64) throws(VFIOError) -> UInt64 {
        try client.startDMALogging(ranges: ranges, pageSize: pageSize)
    }

    /// Stops the device's DMA log (`VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`).
    public func stopDMALogging() throws(VFIOError) { try client.stopDMALogging() }

    /// Reads and clears the device's log of `[iova, iova + length)` at `pageSize`
    /// (`VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`).
    public func reportDMALogging(
        iova: UInt64, length: UInt64, pageSize: UInt64, maxBitmapBytes: UInt64 = VFIOUAPI.type1MaxDirtyBitmapSize
    ) throws(VFIOError) -> VFIODirtyBitmap {
        try client.reportDMALogging(iova: iova, length: length, pageSize: pageSize, maxBitmapBytes: maxBitmapBytes)
    }

    /// Whether the device's DMA log runs (the simulator's view, no ioctl).
    public var isDMALoggingActive: Bool { driver.dmaLog.withLock { $0 != nil } }
}
