import DeviceMatch
import VFIO

/// Whether a device can be live-migrated with Switchover, and if not, why, in sentences a person
/// can act on.
public struct MigrationVerdict: Sendable, Hashable {
    /// Where the migration flags came from.
    public enum FlagsSource: String, Sendable, Hashable {
        /// What the bound variant driver offers according to devprobe's driver table.
        case driverTable = "driver-table"
        /// What the kernel reported for this device (`--probe`).
        case probe
    }

    /// Whether Switchover can live-migrate the device as it is bound now.
    public var isMigratable: Bool
    /// The vendor module that would migrate the device (`mlx5`, `vfio-pci`), nil when none.
    public var handler: String?
    /// What stands in the way; empty exactly when the device is migratable.
    public var reasons: [String]
    /// Facts worth knowing that do not block migration (no P2P, a probe that could not run).
    public var notes: [String]
    /// The device's migration flags, expected or confirmed; nil when it has no migration support.
    public var flags: VFIOMigrationFlags?
    /// Where ``flags`` came from; nil when there are none.
    public var flagsSource: FlagsSource?
    /// The migration variant driver whose id table lists the device, whether bound or not.
    public var variantDriver: String?

    /// A verdict with the given parts; ``MigrationAdvisor`` makes them.
    public init(isMigratable: Bool, handler: String? = nil, reasons: [String] = [], notes: [String] = [],
                flags: VFIOMigrationFlags? = nil, flagsSource: FlagsSource? = nil, variantDriver: String? = nil) {
        self.isMigratable = isMigratable
        self.handler = handler
        self.reasons = reasons
        self.notes = notes
        self.flags = flags
        self.flagsSource = flagsSource
        self.variantDriver = variantDriver
    }
}

/// Decides a device's ``MigrationVerdict`` from its sysfs facts, the vendor modules on offer and,
/// optionally, what the kernel said to ``VFIOMigrationProbe``.
///
/// A device is migratable when it is bound to a VFIO driver, has an IOMMU group, a vendor module
/// serves it, and either its driver is a known migration variant with PRE_COPY or the probe
/// confirmed STOP_COPY. A generic fallback module (``/DeviceMatch/VendorModuleDescriptor/isGenericFallback``)
/// serves every device whose migration support is established that way, whether or not one of
/// its rules names the device's driver: its rules list the variant drivers known to migrate, and
/// flags confirmed by the kernel are worth as much.
public struct MigrationAdvisor: Sendable {
    /// The vendor modules that can migrate devices.
    public var handlers: PCIMatchTable
    /// The sysfs directory the commands in reasons write to.
    public var commandSysfsPath: String

    /// An advisor that matches devices against `handlers` and writes commands for `commandSysfsPath`.
    public init(handlers: PCIMatchTable, commandSysfsPath: String = "/sys/bus/pci") {
        self.handlers = handlers
        self.commandSysfsPath = commandSysfsPath
    }

    /// The verdict for `device`; `probe` is what ``VFIOMigrationProbe`` said, nil when not asked.
    public func verdict(for device: PCIDevice, probe: VFIOProbeOutcome? = nil) -> MigrationVerdict {
        var reasons = device.problems.map { "sysfs: " + $0 }
        var notes: [String] = []
        let ids = device.ids
        let driver = device.driver
        let candidate = VFIODriverCatalog.migrationDriver(serving: device.vendorID, device.deviceID)
        let bound = VFIODriverCatalog.migrationDriver(named: driver)
        let isVFIO = VFIODriverCatalog.isVFIODriver(driver)

        // 1. The driver. A candidate that migrates only virtual functions is no use on another device.
        let vfOnlyMismatch = { (d: VFIOVariantDriver) in d.virtualFunctionsOnly && !device.isVirtualFunction }
        let usable = candidate.flatMap { vfOnlyMismatch($0) ? nil : $0 }
        var flags: VFIOMigrationFlags?
        var source: MigrationVerdict.FlagsSource?
        let noVariant: String
        if let candidate, usable == nil {
            noVariant = "\(candidate.name) migrates \(ids) only as an SR-IOV virtual function, and \(device.address) is not one"
        } else {
            noVariant = "no VFIO variant driver with migration support is known for \(ids), and plain vfio-pci has none"
        }
        let kernelAnswered: Bool
        switch probe {
        case .supported?, .unsupported?: kernelAnswered = true
        case .failed?, nil: kernelAnswered = false
        }
        switch driver {
        case nil:
            if let usable {
                reasons.append("not bound to any driver; the variant driver \(usable.name) serves \(ids): \(bindCommand(usable.name, device, unbind: false))")
            } else {
                reasons.append("not bound to any driver")
                reasons.append(noVariant)
            }
        case let driver? where !isVFIO:
            if let usable {
                reasons.append("bound to \(driver), not to a VFIO driver; the variant driver \(usable.name) serves \(ids): \(bindCommand(usable.name, device, unbind: true))")
            } else {
                reasons.append("bound to \(driver), not to a VFIO driver")
                reasons.append(noVariant)
            }
        case let driver? where bound == nil:
            // A VFIO driver without (known) migration support.
            if VFIODriverCatalog.driversWithoutMigration.contains(driver) {
                if let usable {
                    reasons.append("bound to \(driver), which has no migration support; the variant driver \(usable.name) serves \(ids): \(bindCommand(usable.name, device, unbind: true))")
                } else {
                    reasons.append("bound to \(driver), which has no migration support")
                    reasons.append(noVariant)
                }
            } else if !kernelAnswered {
                reasons.append("bound to \(driver), a VFIO driver whose migration support devprobe does not know; run devprobe --probe as root to ask the kernel")
            }
        case let driver?:
            if let bound {
                if vfOnlyMismatch(bound) {
                    reasons.append("\(driver) migrates \(ids) only as an SR-IOV virtual function, and \(device.address) is not one")
                } else {
                    flags = bound.flags
                    source = .driverTable
                }
            }
        }
        if !device.virtualFunctions.isEmpty, !isVFIO {
            let list = device.virtualFunctions.prefix(4).map(\.description).joined(separator: ", ")
            let more = device.virtualFunctions.count > 4 ? ", …" : ""
            notes.append("an SR-IOV physical function with \(device.virtualFunctions.count) virtual functions (\(list)\(more)): pass through and migrate those")
        }

        // 2. What the kernel says, when asked.
        if let probe {
            switch probe {
            case .supported(let reported):
                if reported.contains(.stopCopy) {
                    flags = reported
                    source = .probe
                } else {
                    let names = reported.names.isEmpty ? "none" : reported.names.joined(separator: "|")
                    reasons.append("the kernel reports migration flags \(names) without STOP_COPY")
                    flags = nil
                    source = nil
                }
            case .unsupported(let err):
                reasons.append("the kernel reports no migration support for \(device.address) (VFIO_DEVICE_FEATURE MIGRATION: \(errnoName(err))); for \(driver ?? "its driver") this usually means the firmware or device lacks it")
                flags = nil
                source = nil
            case .failed(let why):
                notes.append("--probe could not read the migration flags: \(why)")
            }
        }

        // 3. What the flags allow.
        if let current = flags {
            if !current.contains(.preCopy) {
                if source == .probe {
                    notes.append("no PRE_COPY: all device state moves while the VM is stopped, so downtime grows with the state size")
                } else {
                    reasons.append("\(driver ?? "the driver") has no PRE_COPY: all device state would move while the VM is stopped; run devprobe --probe as root to confirm the device's flags")
                }
            }
            if !current.contains(.p2p) {
                notes.append("no P2P: \(driver ?? "the device") cannot stop its peer-to-peer DMA apart from stopping, so migrate it only as the single VFIO device of its VM")
            }
        }

        // 4. The vendor module.
        let established = isVFIO && flags?.contains(.stopCopy) == true
            && (source == .probe || flags?.contains(.preCopy) == true)
        var handler: String?
        if established {
            if let match = handlers.bestMatch(for: device.identity) {
                handler = match.module.name
            } else if let generic = handlers.modules.first(where: \.isGenericFallback) {
                handler = generic.name
            } else {
                reasons.append("no handler module serves \(ids) on \(driver ?? "no driver"): add a vendor module for it")
            }
        }

        // 5. The IOMMU group.
        if device.iommuGroup == nil {
            reasons.append("no IOMMU group: the IOMMU is off or absent; enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on")
        }

        let migratable = established && handler != nil && device.iommuGroup != nil && reasons.isEmpty
        if !migratable && reasons.isEmpty {
            reasons.append("migration support for \(device.address) is not established")
        }
        return MigrationVerdict(
            isMigratable: migratable, handler: handler, reasons: reasons, notes: notes,
            flags: flags, flagsSource: source, variantDriver: candidate?.name ?? bound?.name)
    }

    /// The shell commands that bind `device` to `driver`.
    private func bindCommand(_ driver: String, _ device: PCIDevice, unbind: Bool) -> String {
        let base = "\(commandSysfsPath)/devices/\(device.address)"
        var steps = ["echo \(driver) > \(base)/driver_override"]
        if unbind { steps.append("echo \(device.address) > \(base)/driver/unbind") }
        steps.append("echo \(device.address) > \(commandSysfsPath)/drivers_probe")
        return steps.joined(separator: "; ")
    }
}

/// `ENOTTY` / `EINVAL` / the number.
func errnoName(_ err: Int32) -> String {
    switch err {
    case 25: return "ENOTTY"
    case 22: return "EINVAL"
    default: return "errno \(err)"
    }
}
