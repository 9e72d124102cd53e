import DeviceMatch
import PCIDiscovery
import Testing

/// The vendor modules devprobe ships (a copy: devprobe's table is not a library).
let shippedModules = PCIMatchTable([
    VendorModuleDescriptor(name: "mlx5", rules: [PCIMatchRule(vendorID: 0x15b3, deviceID: 0x101e, driver: "mlx5_vfio_pci")]),
    VendorModuleDescriptor(name: "vfio-pci", rules: [], isGenericFallback: true),
])

/// Scans a fake tree with its own pci.ids and no cache or hwdb.
func scan(_ tree: FakeSysfs) throws -> PCIScanResult {
    try PCIScanner(options: options(tree)).scan()
}

func options(_ tree: FakeSysfs) throws -> PCIScanOptions {
    PCIScanOptions(sysfsRoot: tree.sysRoot, idsFile: try tree.writeIDs(), deterministicNames: true)
}

func address(_ text: String) throws -> PCIAddress {
    try #require(PCIAddress(text))
}

extension PCIScanResult {
    func device(_ text: String) throws -> PCIDevice {
        try #require(devices.first { $0.address.description == text }, "no \(text) in the scan")
    }
}
