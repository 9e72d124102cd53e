import DeviceMatch
import MLX5Handler
import VFIOPCIHandler

/// The vendor modules Switchover ships, as devprobe matches devices to them, from the descriptors
/// the modules declare.
enum VendorModules {
    /// `mlx5`: ConnectX VFs (15b3:101e) bound to mlx5_vfio_pci. `vfio-pci`: the generic fallback
    /// for any VFIO device whose migration support is established (a known migration variant
    /// driver, or flags confirmed by --probe); ``MigrationAdvisor`` applies that condition.
    static let table = PCIMatchTable([MLX5Module.descriptor, VFIOPCIHandler.descriptor])
}
