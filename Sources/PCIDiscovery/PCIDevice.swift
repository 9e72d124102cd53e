import DeviceMatch

/// One PCI function as discovery saw it: what libpci read (ids, class, names, driver, IOMMU group,
/// NUMA node) and what only sysfs has (driver override, SR-IOV links, the VFIO device node).
public struct PCIDevice: Sendable, Hashable {
    /// Where the device is (`0000:3b:00.1`).
    public var address: PCIAddress
    /// The vendor id, as libpci read it from `vendor`.
    public var vendorID: UInt16
    /// The device id, as libpci read it from `device`.
    public var deviceID: UInt16
    /// Nil when the tree has no `subsystem_vendor`/`subsystem_device` and no readable config space.
    public var subsystemVendorID: UInt16?
    /// The subsystem device id, with ``subsystemVendorID``.
    public var subsystemDeviceID: UInt16?
    /// The 24-bit class code: base class, subclass, programming interface (0x020000 for Ethernet).
    public var classCode: UInt32
    /// The revision id; nil when the tree has no `revision` attribute.
    public var revision: UInt8?

    /// Names from pci.ids (or the udev hwdb); nil when the database does not know the id.
    public var vendorName: String?
    /// The device's name under its vendor in pci.ids.
    public var deviceName: String?
    /// The subsystem vendor's name and the subsystem's own name (`lspci -k`'s "Subsystem:" line).
    public var subsystemVendorName: String?
    /// The subsystem's own name (pci.ids, or the device name when the subsystem ids equal the device ids).
    public var subsystemName: String?
    /// The class name (`Ethernet controller`), or the base class name when the subclass is unknown.
    public var className: String?

    /// The bound kernel driver's name (`mlx5_vfio_pci`), nil when unbound.
    public var driver: String?
    /// The IOMMU group number; nil when the device has none (no IOMMU, or the IOMMU is off).
    public var iommuGroup: Int?
    /// The driver the next bind is forced to (`driver_override`); nil when unset.
    public var driverOverride: String?
    /// For an SR-IOV virtual function, the physical function it belongs to.
    public var physicalFunction: PCIAddress?
    /// For an SR-IOV physical function, its enabled virtual functions.
    public var virtualFunctions: [PCIAddress]
    /// The NUMA node the device is attached to; nil when unknown or not NUMA.
    public var numaNode: Int?
    /// The name of the device's VFIO character device (`vfio3`) when the kernel created one.
    public var vfioCdevName: String?

    /// What was wrong in the tree for this device, in words a person can act on. Values that
    /// came from malformed attributes are kept as libpci read them and must not be trusted.
    public var problems: [String]

    /// A device with the given facts; ``PCIScanner`` makes them.
    public init(
        address: PCIAddress, vendorID: UInt16, deviceID: UInt16,
        subsystemVendorID: UInt16? = nil, subsystemDeviceID: UInt16? = nil,
        classCode: UInt32, revision: UInt8? = nil,
        vendorName: String? = nil, deviceName: String? = nil,
        subsystemVendorName: String? = nil, subsystemName: String? = nil,
        className: String? = nil, driver: String? = nil, iommuGroup: Int? = nil,
        driverOverride: String? = nil, physicalFunction: PCIAddress? = nil,
        virtualFunctions: [PCIAddress] = [], numaNode: Int? = nil, vfioCdevName: String? = nil,
        problems: [String] = []
    ) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
        self.classCode = classCode
        self.revision = revision
        self.vendorName = vendorName
        self.deviceName = deviceName
        self.subsystemVendorName = subsystemVendorName
        self.subsystemName = subsystemName
        self.className = className
        self.driver = driver
        self.iommuGroup = iommuGroup
        self.driverOverride = driverOverride
        self.physicalFunction = physicalFunction
        self.virtualFunctions = virtualFunctions
        self.numaNode = numaNode
        self.vfioCdevName = vfioCdevName
        self.problems = problems
    }

    /// The identity vendor modules match against.
    public var identity: PCIIdentity {
        PCIIdentity(
            vendorID: vendorID, deviceID: deviceID,
            subsystemVendorID: subsystemVendorID, subsystemDeviceID: subsystemDeviceID,
            classCode: classCode, driver: driver)
    }

    /// Whether the device is an SR-IOV virtual function (it has a `physfn` link).
    public var isVirtualFunction: Bool { physicalFunction != nil }

    /// `15b3:101e`.
    public var ids: String { "\(hexString(vendorID, width: 4)):\(hexString(deviceID, width: 4))" }

    /// The VFIO character device (`/dev/vfio/devices/vfio3`, kernel 6.6+), when the kernel made one.
    public var vfioCdevPath: String? { vfioCdevName.map { "/dev/vfio/devices/\($0)" } }

    /// The legacy VFIO group node (`/dev/vfio/42`): only while bound to a VFIO driver.
    public var vfioGroupPath: String? {
        guard let iommuGroup, VFIODriverCatalog.isVFIODriver(driver) else { return nil }
        return "/dev/vfio/\(iommuGroup)"
    }

    /// The node a VMM opens for this device: the character device when there is one, otherwise
    /// the group node; nil when the device is not bound to a VFIO driver.
    public var vfioDeviceNode: String? { vfioCdevPath ?? vfioGroupPath }
}
