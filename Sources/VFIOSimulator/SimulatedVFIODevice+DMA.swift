import SystemPackage
import VFIO

extension SimulatedVFIODevice: VFIOUAPIDevice {
    public var uapi: VFIODeviceUAPI { VFIODeviceUAPI(client: client) }
}

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

    /// Whether the device's DMA log runs (the simulator's view, no ioctl).
    public var isDMALoggingActive: Bool { driver.dmaLog.withLock { $0 != nil } }
}
