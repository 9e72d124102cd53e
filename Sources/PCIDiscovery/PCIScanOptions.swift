/// Where and how discovery reads devices.
public struct PCIScanOptions: Sendable, Hashable {
    /// libpci's `sysfs.path`: the directory that holds `devices/` (`/sys/bus/pci` on a live system).
    public var sysfsPath: String
    /// The pci.ids file to name devices from; nil for libpci's default (`/usr/share/misc/pci.ids`).
    public var idsFile: String?
    /// Names from the ids file alone: no `~/.pciids-cache`, no udev hwdb. Use it in tests.
    public var deterministicNames: Bool
    /// Whether to look up vendor, device and class names at all.
    public var lookUpNames: Bool

    /// Options for the tree under `sysfsPath` (default: the live system).
    public init(
        sysfsPath: String = "/sys/bus/pci", idsFile: String? = nil,
        deterministicNames: Bool = false, lookUpNames: Bool = true
    ) {
        self.sysfsPath = sysfsPath
        self.idsFile = idsFile
        self.deterministicNames = deterministicNames
        self.lookUpNames = lookUpNames
    }

    /// Options for a tree laid out like `/sys`: devices are read from `root/bus/pci/devices`.
    public init(
        sysfsRoot root: String, idsFile: String? = nil,
        deterministicNames: Bool = false, lookUpNames: Bool = true
    ) {
        var base = root
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        self.init(
            sysfsPath: (base == "/" ? "" : base) + "/bus/pci", idsFile: idsFile,
            deterministicNames: deterministicNames, lookUpNames: lookUpNames)
    }
}
