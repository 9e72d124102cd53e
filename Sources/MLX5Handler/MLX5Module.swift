import DeviceMatch
import MigrationCore
import VFIO
import VFIOPCIHandler

/// The mlx5 vendor module: the generic VFIO-PCI handler with the ``MLX5Tuning``.
public enum MLX5Module {
    /// What the module declares for discovery and registration (from devices.matchtable).
    public static let descriptor = VendorModuleDescriptor(name: "mlx5", rules: DevicesMatchTable.rules)

    /// The module to add to a VMM's `VFIOVendorRegistry`.
    public static let module = module { MLX5Tuning() }

    /// The module whose handlers get their tuning from `makeTuning`, one per handler (a tuning
    /// holds its device's buffers): the load costs a VMM measured on its hardware, or the example
    /// VM's simulated ones.
    public static func module(makeTuning: @escaping @Sendable () -> MLX5Tuning) -> VFIOVendorModule {
        VFIOVendorModule(descriptor: descriptor) { device, config in makeHandler(device: device, config: config, tuning: makeTuning()) }
    }

    /// A handler for one mlx5 device.
    public static func makeHandler(
        device: VFIOMigrationDevice, config: VFIOPCIConfigState? = nil,
        tuning: MLX5Tuning = MLX5Tuning()
    ) -> VFIOPCIHandler {
        VFIOPCIHandler(device: device, config: config, tuning: tuning)
    }
}
