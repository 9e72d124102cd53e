import VFIO

/// The simulated device's config region, through the same client calls as the kernel device's.
extension SimulatedVFIODevice: VFIOConfigRegionDevice {
    public var configRegion: VFIOConfigRegion { VFIOConfigRegion(client: client, name: name) }
}
