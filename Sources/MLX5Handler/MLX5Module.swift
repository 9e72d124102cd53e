import DeviceMatch

/// What the mlx5 module declares about itself for discovery and registration.
public enum MLX5Module {
    public static let descriptor = VendorModuleDescriptor(name: "mlx5", rules: DevicesMatchTable.rules)
}
