import DeviceMatch
import VFIO

/// A kernel VFIO variant driver with migration support: which devices it binds and which
/// migration flags it offers (vfio-uapi-spec §4).
public struct VFIOVariantDriver: Sendable, Hashable {
    /// The sysfs driver name (`mlx5_vfio_pci`; `xe-vfio-pci` is hyphenated).
    public var name: String
    /// The devices in the driver's id table; empty when devprobe does not list them.
    public var devices: [PCIMatchRule]
    /// The flags the driver offers when the device and its firmware support migration.
    public var flags: VFIOMigrationFlags
    /// Whether the driver migrates only SR-IOV virtual functions of its ids (virtio binds the
    /// same id on a physical function, without migration).
    public var virtualFunctionsOnly: Bool
    /// The first kernel release with migration through this driver.
    public var since: String
    /// Whether the driver gives its devices DMA logging (device dirty tracking).
    public var dmaLogging: DMALogging

    /// Whether a driver has DMA-logging ops (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`).
    public enum DMALogging: Sendable, Hashable {
        /// No log ops: the VMM needs another way to find the pages the device writes.
        case no
        /// Log ops for every device it migrates.
        case yes
        /// Log ops when the device's firmware has the named capability (mlx5: `adv_virtualization`).
        case ifFirmwareHas(String)
    }

    /// A driver entry; see ``VFIODriverCatalog/migrationDrivers`` for the known ones.
    public init(
        name: String, devices: [PCIMatchRule], flags: VFIOMigrationFlags,
        virtualFunctionsOnly: Bool = false, since: String, dmaLogging: DMALogging = .no
    ) {
        self.name = name
        self.devices = devices
        self.flags = flags
        self.virtualFunctionsOnly = virtualFunctionsOnly
        self.since = since
        self.dmaLogging = dmaLogging
    }

    /// Whether the driver's id table lists this device's ids.
    public func serves(vendorID: UInt16, deviceID: UInt16) -> Bool {
        devices.contains { $0.matches(PCIIdentity(vendorID: vendorID, deviceID: deviceID)) }
    }
}

/// What devprobe knows about the kernel's VFIO drivers.
public enum VFIODriverCatalog {
    /// The plain VFIO PCI driver: no migration support.
    public static let plainDriver = "vfio-pci"

    /// Variant drivers with migration support, as of Linux 6.19: ids, flags and DMA logging
    /// from shared/reference/vfio-uapi-spec.md §4 (drivers/vfio/pci/*; mlx5 §5.1 and §5.6).
    public static let migrationDrivers: [VFIOVariantDriver] = [
        VFIOVariantDriver(
            name: "mlx5_vfio_pci", devices: ids(0x15b3, [0x101e]),
            flags: [.stopCopy, .p2p, .preCopy], since: "5.18",
            dmaLogging: .ifFirmwareHas("adv_virtualization")),
        VFIOVariantDriver(
            name: "hisi_acc_vfio_pci", devices: ids(0x19e5, [0xa256, 0xa259, 0xa251]),
            flags: [.stopCopy, .preCopy], since: "5.18"),
        VFIOVariantDriver(
            name: "pds_vfio_pci", devices: ids(0x1dd8, [0x1003]),
            flags: [.stopCopy, .p2p], since: "6.6", dmaLogging: .yes),
        VFIOVariantDriver(
            name: "virtio_vfio_pci", devices: ids(0x1af4, [0x1041]),
            flags: [.stopCopy, .p2p, .preCopy], virtualFunctionsOnly: true, since: "6.13"),
        VFIOVariantDriver(
            name: "qat_vfio_pci", devices: ids(0x8086, [0x4941, 0x4943, 0x4945, 0x4949]),
            flags: [.stopCopy, .p2p, .preCopy], since: "6.10"),
        // Binds Intel Xe GPU virtual functions (PTL, WCL, BMG); their ids are not listed here.
        VFIOVariantDriver(name: "xe-vfio-pci", devices: [], flags: [.stopCopy, .p2p], since: "6.19")
    ]

    /// VFIO drivers known to have no migration support.
    public static let driversWithoutMigration: Set<String> = [plainDriver, "nvgrace_gpu_vfio_pci", "ism_vfio_pci"]

    /// The migration variant driver with this sysfs name.
    public static func migrationDriver(named name: String?) -> VFIOVariantDriver? {
        guard let name else { return nil }
        return migrationDrivers.first { $0.name == name }
    }

    /// The migration variant driver whose id table lists the device, if any.
    public static func migrationDriver(serving vendorID: UInt16, _ deviceID: UInt16) -> VFIOVariantDriver? {
        migrationDrivers.first { $0.serves(vendorID: vendorID, deviceID: deviceID) }
    }

    /// Whether `driver` is a VFIO driver: vfio-pci, a known variant, or a name of the variant
    /// pattern (`*_vfio_pci`, `*-vfio-pci`).
    public static func isVFIODriver(_ driver: String?) -> Bool {
        guard let driver else { return false }
        return driver == plainDriver || driversWithoutMigration.contains(driver)
            || migrationDriver(named: driver) != nil
            || driver.hasSuffix("_vfio_pci") || driver.hasSuffix("-vfio-pci")
    }

    private static func ids(_ vendor: UInt16, _ devices: [UInt16]) -> [PCIMatchRule] {
        devices.map { PCIMatchRule(vendorID: vendor, deviceID: $0) }
    }
}
