import SystemPackage

/// A device whose PCI config space is reachable through the VFIO config region
/// (`VFIO_PCI_CONFIG_REGION_INDEX`, 7): `VFIO_DEVICE_GET_REGION_INFO` for its offset and size, then
/// `pread`/`pwrite` on the device fd, as QEMU's vfio-pci reads and writes it. The generic VFIO-PCI
/// handler saves the config state from it in QEMU's layout.
public protocol VFIOConfigSpaceAccess: AnyObject, Sendable {
    /// The device's name in errors.
    var name: String { get }
    /// The size of the config region (`VFIO_DEVICE_GET_REGION_INFO`): 256 or up to 4096 bytes.
    func configSpaceSize() throws(VFIOError) -> Int
    /// `count` bytes of config space at `offset` (`pread(2)`).
    func readConfigSpace(offset: Int, count: Int) throws(VFIOError) -> [UInt8]
    /// Writes `bytes` into config space at `offset` (`pwrite(2)`); the device decides what sticks.
    func writeConfigSpace(offset: Int, bytes: [UInt8]) throws(VFIOError)
}

/// VFIO_PCI_CONFIG_REGION_INDEX.
package let configRegionIndex: UInt32 = 7

extension KernelVFIODevice: VFIOConfigSpaceAccess {
    public func configSpaceSize() throws(VFIOError) -> Int {
        Int(clamping: try configResult(client.regionInfo(configRegionIndex)).size)
    }

    public func readConfigSpace(offset: Int, count: Int) throws(VFIOError) -> [UInt8] {
        try configResult(client.readRegion(configRegionIndex, offset: UInt64(max(offset, 0)), count: count))
    }

    public func writeConfigSpace(offset: Int, bytes: [UInt8]) throws(VFIOError) {
        try configResult(client.writeRegion(configRegionIndex, offset: UInt64(max(offset, 0)), bytes: bytes))
    }
}

extension VFIOConfigSpaceAccess {
    package func configResult<T>(_ result: Result<T, Errno>) throws(VFIOError) -> T {
        switch result {
        case .success(let value): return value
        case .failure(let errno): throw VFIOError.syscallFailed(operation: .configSpace, device: name, errno: errno)
        }
    }
}
