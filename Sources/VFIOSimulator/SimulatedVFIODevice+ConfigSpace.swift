import SystemPackage
import VFIO

/// The simulated device's config region, through the same client calls as the kernel device's.
extension SimulatedVFIODevice: VFIOConfigSpaceAccess {
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
