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

/// The config region of a device reached through a `VFIODeviceClient`: the one implementation of
/// ``VFIOConfigSpaceAccess`` behind the kernel-backed and the simulated device (both talk to the
/// device through the same client; only the fd differs).
public struct VFIOConfigRegion: Sendable {
    let client: VFIODeviceClient
    let name: String

    package init(client: VFIODeviceClient, name: String) { (self.client, self.name) = (client, name) }

    /// The region's size (`VFIO_DEVICE_GET_REGION_INFO`).
    public func size() throws(VFIOError) -> Int {
        Int(clamping: try result(client.regionInfo(configRegionIndex)).size)
    }

    /// `count` bytes at `offset` (`pread(2)`); a negative offset reads from 0.
    public func read(offset: Int, count: Int) throws(VFIOError) -> [UInt8] {
        try result(client.readRegion(configRegionIndex, offset: UInt64(max(offset, 0)), count: count))
    }

    /// Writes `bytes` at `offset` (`pwrite(2)`); a negative offset writes at 0.
    public func write(offset: Int, bytes: [UInt8]) throws(VFIOError) {
        try result(client.writeRegion(configRegionIndex, offset: UInt64(max(offset, 0)), bytes: bytes))
    }

    private func result<T>(_ result: Result<T, Errno>) throws(VFIOError) -> T {
        switch result {
        case .success(let value): return value
        case .failure(let errno): throw VFIOError.syscallFailed(operation: .configSpace, device: name, errno: errno)
        }
    }
}

/// A device whose config space is its ``VFIOConfigRegion``: it conforms to
/// ``VFIOConfigSpaceAccess`` through this protocol's extension, with nothing of its own to write.
public protocol VFIOConfigRegionDevice: VFIOConfigSpaceAccess {
    /// The device's config region.
    var configRegion: VFIOConfigRegion { get }
}

extension VFIOConfigRegionDevice {
    public func configSpaceSize() throws(VFIOError) -> Int { try configRegion.size() }

    public func readConfigSpace(offset: Int, count: Int) throws(VFIOError) -> [UInt8] {
        try configRegion.read(offset: offset, count: count)
    }

    public func writeConfigSpace(offset: Int, bytes: [UInt8]) throws(VFIOError) {
        try configRegion.write(offset: offset, bytes: bytes)
    }
}

extension KernelVFIODevice: VFIOConfigRegionDevice {
    public var configRegion: VFIOConfigRegion { VFIOConfigRegion(client: client, name: name) }
}
