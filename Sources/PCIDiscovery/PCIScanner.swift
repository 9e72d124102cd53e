import CLibPCI

#if canImport(Glibc)
import Glibc
#endif

/// An entry of `devices/` that discovery could not turn into a device, and why.
public struct PCISkippedEntry: Sendable, Hashable, CustomStringConvertible {
    /// The entry's name in `devices/`.
    public var name: String
    /// Why it was skipped.
    public var reason: String

    /// An entry and the reason it was skipped.
    public init(name: String, reason: String) { (self.name, self.reason) = (name, reason) }

    /// `name: reason`.
    public var description: String { "\(name): \(reason)" }
}

/// The devices of one tree, sorted by address, and the entries that were not devices.
public struct PCIScanResult: Sendable, Hashable {
    /// The devices read, sorted by address.
    public var devices: [PCIDevice]
    /// The entries of `devices/` that could not be read, by name.
    public var skipped: [PCISkippedEntry]

    /// A result with the given devices and skipped entries.
    public init(devices: [PCIDevice], skipped: [PCISkippedEntry] = []) { (self.devices, self.skipped) = (devices, skipped) }
}

/// Reads PCI devices from a sysfs tree: the device's sysfs directory gives its ids, subsystem,
/// revision, driver, IOMMU group, driver override, SR-IOV links, NUMA node and VFIO device node;
/// libpci names it from pci.ids, and reads the ids itself when an attribute is not in the
/// kernel's format, so the ids shown are the ones lspci shows.
///
/// libpci's sysfs access method is always set explicitly, never probed. Each device is read on
/// its own (`pci_get_dev` when libpci reads it), after the attributes libpci needs have been
/// checked, so one malformed device is reported (``PCIDevice/problems`` or
/// ``PCIScanResult/skipped``) without hiding the others. Nothing here exits the process or traps
/// on input.
public struct PCIScanner: Sendable {
    /// Which tree to read and how to name devices.
    public var options: PCIScanOptions

    /// A scanner of the tree `options` names (default: the live system).
    public init(options: PCIScanOptions = PCIScanOptions()) {
        self.options = options
    }

    /// Every device in the tree.
    public func scan() throws(PCIDiscoveryError) -> PCIScanResult {
        let devicesDir = try devicesDirectory()
        guard let names = devicesDir.entries(limit: 1 << 20) else {
            throw .unreadableTree(path: devicesDir.path, reason: errnoText(errno))
        }
        var skipped: [PCISkippedEntry] = []
        var addresses: [PCIAddress] = []
        for name in names {
            // libpci reads <devices>/DDDD:BB:DD.F with exactly that spelling: other names would
            // be read under another path, and unparsable ones are fatal to pci_scan_bus.
            if let address = PCIAddress(name), address.description == name {
                addresses.append(address)
            } else {
                skipped.append(
                    PCISkippedEntry(
                        name: name, reason: "not a PCI address in the kernel's DDDD:BB:DD.F form; ignored"))
            }
        }
        addresses.sort()
        let session = try LibPCIAccess(options: options)
        var devices: [PCIDevice] = []
        devices.reserveCapacity(addresses.count)
        for address in addresses {
            switch try read(address, in: devicesDir, session) {
            case .success(let device): devices.append(device)
            case .failure(let failure): skipped.append(PCISkippedEntry(name: address.description, reason: failure.reason))
            }
        }
        return PCIScanResult(devices: devices, skipped: skipped.sorted { $0.name < $1.name })
    }

    /// One device, without reading the others.
    public func device(at address: PCIAddress) throws(PCIDiscoveryError) -> PCIDevice {
        let devicesDir = try devicesDirectory()
        let session = try LibPCIAccess(options: options)
        switch try read(address, in: devicesDir, session) {
        case .success(let device): return device
        case .failure(let failure): throw .unreadableDevice(address, reason: failure.reason)
        }
    }

    private func devicesDirectory() throws(PCIDiscoveryError) -> SysfsDirectory {
        let path = options.sysfsPath + "/devices"
        do {
            return try SysfsDirectory(path: path)
        } catch {
            throw .unreadableTree(path: path, reason: error.text)
        }
    }

    /// A device, or why it cannot be identified; throws only for errors that end the whole scan
    /// (a broken ids file).
    private func read(_ address: PCIAddress, in devicesDir: SysfsDirectory, _ session: LibPCIAccess)
        throws(PCIDiscoveryError) -> Result<PCIDevice, DeviceReadFailure>
    {
        let name = address.description
        let dir: SysfsDirectory
        do {
            dir = try devicesDir.subdirectory(name)
        } catch {
            if error.errno == ENOENT {
                if !devicesDir.hasEntry(name) { throw .deviceNotFound(address, sysfsPath: options.sysfsPath) }
                return .failure(DeviceReadFailure(reason: "its entry is a broken symbolic link"))
            }
            return .failure(DeviceReadFailure(reason: "cannot open its directory: \(error.text)"))
        }
        var reader = DeviceAttributeReader(dir: dir)
        guard let identity = reader.identity() else {
            return .failure(DeviceReadFailure(reason: reader.problems.joined(separator: "; ")))
        }
        let fields: LibPCIAccess.Fields
        if let wellFormed = identity.fields {
            fields = wellFormed
        } else {
            // Show what libpci (and so lspci) makes of the attributes the kernel would never write.
            do {
                fields = try session.fields(of: address)
            } catch {
                return .failure(DeviceReadFailure(reason: error.description))
            }
            reader.reportMalformedIDs(identity, as: fields)
        }
        var device = PCIDevice(
            address: address, vendorID: fields.vendorID, deviceID: fields.deviceID,
            subsystemVendorID: identity.subsystemVendorID, subsystemDeviceID: identity.subsystemDeviceID,
            classCode: UInt32(fields.deviceClass) << 8 | UInt32(identity.progIF), revision: identity.revision)
        device.driver = reader.driver()
        device.iommuGroup = reader.iommuGroup()
        device.driverOverride = reader.driverOverride()
        device.numaNode = reader.numaNode()
        device.physicalFunction = reader.physicalFunction()
        device.virtualFunctions = reader.virtualFunctions()
        if VFIODriverCatalog.isVFIODriver(device.driver) {
            device.vfioCdevName = reader.vfioCdevName()
        }
        device.problems = reader.problems
        if options.lookUpNames {
            try lookUpNames(&device, session)
        }
        return .success(device)
    }

    private func lookUpNames(_ device: inout PCIDevice, _ session: LibPCIAccess) throws(PCIDiscoveryError) {
        let v = Int(device.vendorID)
        let d = Int(device.deviceID)
        device.vendorName = try session.name(PCI_LOOKUP_VENDOR, v)
        device.deviceName = try session.name(PCI_LOOKUP_DEVICE, v, d)
        // For a class known only by its base class libpci appends the number ("Unassigned class [ffff]").
        device.className = try session.name(PCI_LOOKUP_CLASS, Int(device.classCode >> 8)).map { name in
            guard name.utf8.last == UInt8(ascii: "]") else { return name }
            let classNumber = " [\(hexString(device.classCode >> 8, width: 4))]"
            return name.hasSuffix(classNumber) ? String(name.dropLast(classNumber.count)) : name
        }
        if let sv = device.subsystemVendorID, let sd = device.subsystemDeviceID {
            device.subsystemVendorName = try session.name(
                pci_lookup_mode(PCI_LOOKUP_SUBSYSTEM.rawValue | PCI_LOOKUP_VENDOR.rawValue), Int(sv))
            device.subsystemName = try session.name(
                pci_lookup_mode(PCI_LOOKUP_SUBSYSTEM.rawValue | PCI_LOOKUP_DEVICE.rawValue), v, d, Int(sv), Int(sd))
        }
    }
}

/// Why one device cannot be identified.
struct DeviceReadFailure: Error {
    var reason: String
}
