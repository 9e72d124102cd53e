import DeviceMatch
import MLX5Handler
import PCIDiscovery
import Testing
import VFIOPCIHandler

/// The vendor modules devprobe ships, from the descriptors they declare (as devprobe's VendorModules.table).
let shippedModules = PCIMatchTable([MLX5Module.descriptor, VFIOPCIHandler.descriptor])

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
