import DeviceMatch
import MigrationCore
import VFIO
import VFIOPCIHandler

/// The mlx5 vendor module: the generic VFIO-PCI handler with the ``MLX5Tuning``.
public enum MLX5Module {
    /// What the module declares for discovery and registration (from devices.matchtable).
    public static let descriptor = VendorModuleDescriptor(name: "mlx5", rules: DevicesMatchTable.rules)

    /// The module to add to a VMM's `VFIOVendorRegistry`.
    public static let module = VFIOVendorModule(descriptor: descriptor) { device, config in
        makeHandler(device: device, config: config)
    }

    /// A handler for one mlx5 device.
    public static func makeHandler(
        device: VFIOMigrationDevice, config: VFIOPCIConfigState? = nil,
        tuning: MLX5Tuning = MLX5Tuning()
    ) -> VFIOPCIHandler {
        VFIOPCIHandler(device: device, config: config, tuning: tuning)
    }
}
