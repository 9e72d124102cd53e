/// Why discovery could not produce an answer. Each case names the path or device concerned.
public enum PCIDiscoveryError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The sysfs tree cannot be listed (`path` is its `devices/` directory).
    case unreadableTree(path: String, reason: String)
    /// libpci raised a fatal error during `operation`; `message` is libpci's.
    case libpci(operation: String, message: String)
    /// The requested device is not in the tree.
    case deviceNotFound(PCIAddress, sysfsPath: String)
    /// The device is in the tree but cannot be identified (a mandatory attribute is missing or unreadable).
    case unreadableDevice(PCIAddress, reason: String)

    /// One line naming the path or device and what went wrong.
    public var description: String {
        switch self {
        case .unreadableTree(let path, let reason):
            return "cannot read \(path): \(reason)"
        case .libpci(let operation, let message):
            return "libpci \(operation): \(message)"
        case .deviceNotFound(let address, let sysfsPath):
            return "no device \(address) in \(sysfsPath)/devices"
        case .unreadableDevice(let address, let reason):
            return "cannot identify \(address): \(reason)"
        }
    }
}
