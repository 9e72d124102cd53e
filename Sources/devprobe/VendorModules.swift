import DeviceMatch

/// The vendor modules Switchover ships, as devprobe matches devices to them. This table is the
/// one place to change until the modules declare their own descriptors.
enum VendorModules {
    /// `mlx5`: ConnectX VFs (15b3:101e) bound to mlx5_vfio_pci. `vfio-pci`: the generic fallback
    /// for any VFIO device whose migration support is established (a known migration variant
    /// driver, or flags confirmed by --probe); ``MigrationAdvisor`` applies that condition.
    static let table = PCIMatchTable([
        VendorModuleDescriptor(
            name: "mlx5",
            rules: [PCIMatchRule(vendorID: 0x15b3, deviceID: 0x101e, driver: "mlx5_vfio_pci")]),
        VendorModuleDescriptor(name: "vfio-pci", rules: [], isGenericFallback: true),
    ])
}
