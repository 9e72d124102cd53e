import DeviceMatch
import SystemPackage
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
    /// Which dirty tracking the device itself offers; nil when its migration flags are unknown.
    public var dirtyTracking: DirtyTracking?

    /// IOMMU dirty tracking of the device's container or HWPT, as `--probe` found it; nil when
    /// not asked (it is a fact of the host's IOMMU, not of the driver).
    public var iommuDirtyTracking: IOMMUDirtyTracking?

    /// IOMMU dirty tracking, as the kernel answered.
    public struct IOMMUDirtyTracking: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable {
            /// A type1 container with the migration capability (`VFIO_IOMMU_DIRTY_PAGES`).
            case type1
            /// An iommufd HWPT with dirty tracking (`IOMMU_HWPT_GET_DIRTY_BITMAP`).
            case iommufd
            /// Neither.
            case none
        }

        public var kind: Kind
        /// The kernel's answer, in words, when there is none.
        public var detail: String?

        public init(kind: Kind, detail: String? = nil) { (self.kind, self.detail) = (kind, detail) }
    }

    /// Which tracking a VMM would use for the guest pages the device writes by DMA, in QEMU's
    /// order: its own DMA logging, else the IOMMU's; nil when not known.
    public enum TrackingOffered: String, Sendable, Hashable {
        case deviceDMALogging = "device-dma-logging"
        case iommuType1 = "iommu-type1"
        case iommufd = "iommufd"
        case none = "none"
    }

    /// See ``TrackingOffered``: device logging when known to exist, else the IOMMU's kind once
    /// probed, else none when both are known absent.
    public var trackingOffered: TrackingOffered? {
        if dirtyTracking?.kind == .dmaLogging { return .deviceDMALogging }
        switch iommuDirtyTracking?.kind {
        case .type1?: return .iommuType1
        case .iommufd?: return .iommufd
        case .none?: return dirtyTracking?.kind == DirtyTracking.Kind.none ? TrackingOffered.none : nil
        case nil: return nil
        }
    }

    /// Whether the device can stop its peer-to-peer DMA apart from stopping (flag P2P), which a
    /// VMM needs when more than one device of a VM migrates; nil when the flags are unknown.
    public var p2p: Bool? { flags.map { $0.contains(.p2p) } }

    /// Whether the device logs the guest pages its DMA writes, and how devprobe knows.
    public struct DirtyTracking: Sendable, Hashable {
        /// What the device offers.
        public enum Kind: String, Sendable, Hashable {
            /// Device DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`).
            case dmaLogging = "dma-logging"
            /// Nothing on the device: the VMM must use IOMMU dirty tracking or count memory as dirty.
            case none
        }

        /// What the device offers.
        public var kind: Kind
        /// Where that came from: the driver table, or the kernel's answer to a PROBE.
        public var source: FlagsSource
        /// What the answer rests on, in words (`when the firmware has adv_virtualization`,
        /// `PROBE DMA_LOGGING_START: ENOTTY`); nil when there is nothing to add.
        public var detail: String?

        /// A dirty-tracking fact.
        public init(kind: Kind, source: FlagsSource, detail: String? = nil) {
            (self.kind, self.source, self.detail) = (kind, source, detail)
        }
    }

    /// A verdict with the given parts; ``MigrationAdvisor`` makes them.
    public init(
        isMigratable: Bool, handler: String? = nil, reasons: [String] = [], notes: [String] = [],
        flags: VFIOMigrationFlags? = nil, flagsSource: FlagsSource? = nil, variantDriver: String? = nil,
        dirtyTracking: DirtyTracking? = nil, iommuDirtyTracking: IOMMUDirtyTracking? = nil
    ) {
        self.iommuDirtyTracking = iommuDirtyTracking
        self.isMigratable = isMigratable
        self.handler = handler
        self.reasons = reasons
        self.notes = notes
        self.flags = flags
        self.flagsSource = flagsSource
        self.variantDriver = variantDriver
        self.dirtyTracking = dirtyTracking
    }
}

/// Decides a device's ``MigrationVerdict`` from its sysfs facts, the vendor modules on offer and,
/// optionally, what the kernel said to ``VFIOMigrationProbe``.
///
/// A device is migratable when it is bound to a VFIO driver, has an IOMMU group, a vendor module
/// serves it, and its driver offers STOP_COPY: a known migration variant driver, or the probe
/// confirmed it. Without PRE_COPY all device state moves while the guest is stopped (a note, not
/// a reason), as QEMU and Switchover's generic handler migrate such devices. A generic fallback module (``/DeviceMatch/VendorModuleDescriptor/isGenericFallback``)
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

    /// The verdict for `device` from everything ``VFIOMigrationProbe/examine(_:)`` learned.
    public func verdict(for device: PCIDevice, probed: VFIODeviceProbeResult) -> MigrationVerdict {
        verdict(for: device, probe: probed.migration, dmaLogging: probed.dmaLogging, iommu: probed.iommuDirtyTracking)
    }

    /// The verdict for `device`; `probe` and `dmaLogging` are what ``VFIOMigrationProbe`` said,
    /// nil when not asked.
    public func verdict(
        for device: PCIDevice, probe: VFIOProbeOutcome? = nil,
        dmaLogging: VFIODMALoggingOutcome? = nil, iommu: VFIOIOMMUTrackingOutcome? = nil
    ) -> MigrationVerdict {
        var reasons = device.problems.map { "sysfs: " + $0 }
        var notes: [String] = []
        var ids: String { device.ids }
        let driver = device.driver
        let candidate = VFIODriverCatalog.migrationDriver(serving: device.vendorID, device.deviceID)
        let bound = VFIODriverCatalog.migrationDriver(named: driver)
        let isVFIO = VFIODriverCatalog.isVFIODriver(driver)

        // 1. The driver. A candidate that migrates only virtual functions is no use on another device.
        let vfOnlyMismatch = { (d: VFIOVariantDriver) in d.virtualFunctionsOnly && !device.isVirtualFunction }
        let usable = candidate.flatMap { vfOnlyMismatch($0) ? nil : $0 }
        var flags: VFIOMigrationFlags?
        var source: MigrationVerdict.FlagsSource?
        func onlyAsVirtualFunction(_ driver: String) -> String {
            "\(driver) migrates \(ids) only as an SR-IOV virtual function, and \(device.address) is not one"
        }
        // A driver that rules migration out: the way out is to bind the usable variant driver
        // (unbinding the current one first, if any), else to say why there is none.
        func blockedByDriver(_ situation: String) {
            if let usable {
                let bind = bindCommand(usable.name, device, unbind: driver != nil)
                reasons.append("\(situation); the variant driver \(usable.name) serves \(ids): \(bind)")
            } else {
                reasons.append(situation)
                reasons.append(
                    candidate.map { onlyAsVirtualFunction($0.name) }
                        ?? "no VFIO variant driver with migration support is known for \(ids), and plain vfio-pci has none")
            }
        }
        let kernelAnswered: Bool
        switch probe {
        case .supported?, .unsupported?: kernelAnswered = true
        case .failed?, nil: kernelAnswered = false
        }
        switch driver {
        case nil:
            blockedByDriver("not bound to any driver")
        case let driver? where !isVFIO:
            blockedByDriver("bound to \(driver), not to a VFIO driver")
        case let driver? where bound == nil:
            // A VFIO driver without (known) migration support.
            if VFIODriverCatalog.driversWithoutMigration.contains(driver) {
                blockedByDriver("bound to \(driver), which has no migration support")
            } else if !kernelAnswered {
                reasons.append(
                    "bound to \(driver), a VFIO driver whose migration support devprobe does not know; run devprobe --probe as root to ask the kernel"
                )
            }
        case let driver?:
            if let bound {
                if vfOnlyMismatch(bound) {
                    reasons.append(onlyAsVirtualFunction(driver))
                } else {
                    flags = bound.flags
                    source = .driverTable
                }
            }
        }
        if !device.virtualFunctions.isEmpty, !isVFIO {
            let list = device.virtualFunctions.prefix(4).map(\.description).joined(separator: ", ")
            let more = device.virtualFunctions.count > 4 ? ", …" : ""
            notes.append(
                "an SR-IOV physical function with \(device.virtualFunctions.count) virtual functions (\(list)\(more)): pass through and migrate those"
            )
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
                reasons.append(
                    "the kernel reports no migration support for \(device.address) (VFIO_DEVICE_FEATURE MIGRATION: \(errnoName(err))); for \(driver ?? "its driver") this usually means the firmware or device lacks it"
                )
                flags = nil
                source = nil
            case .failed(let why):
                notes.append("--probe could not read the migration flags: \(why)")
            }
        }

        // 3. What the flags allow: STOP_COPY is enough to migrate; the others change how.
        var dirtyTracking: MigrationVerdict.DirtyTracking?
        var iommuTracking: MigrationVerdict.IOMMUDirtyTracking?
        if let current = flags, current.contains(.stopCopy) {
            if !current.contains(.preCopy) {
                notes.append("no PRE_COPY: all device state moves while the guest is stopped: expect a longer downtime")
            }
            if !current.contains(.p2p) {
                notes.append(
                    "no P2P: \(driver ?? "the device") cannot stop its peer-to-peer DMA apart from stopping, so migrate it only as the single VFIO device of its VM"
                )
            }
            dirtyTracking = self.dirtyTracking(bound: bound, probe: dmaLogging, notes: &notes)
            switch iommu {
            case .type1?: iommuTracking = .init(kind: .type1)
            case .iommufd?: iommuTracking = .init(kind: .iommufd)
            case .unsupported(let why)?: iommuTracking = .init(kind: .none, detail: why)
            case .failed(let why)?: notes.append("--probe could not ask for IOMMU dirty tracking: \(why)")
            case nil: break
            }
            let iommuTracks = iommuTracking.map { $0.kind != .none } ?? false
            if dirtyTracking?.kind == MigrationVerdict.DirtyTracking.Kind.none, !iommuTracks {
                notes.append(
                    "no device dirty tracking: the VMM must find the guest pages it writes by DMA through IOMMU dirty tracking, or count all guest memory as dirty (QEMU's enable-migration=auto refuses a device with neither)"
                )
            }
        }

        // 4. The vendor module.
        let established = isVFIO && flags?.contains(.stopCopy) == true
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
            reasons.append(
                "no IOMMU group: the IOMMU is off or absent; enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on"
            )
        }

        let migratable = established && handler != nil && device.iommuGroup != nil && reasons.isEmpty
        if !migratable && reasons.isEmpty {
            reasons.append("migration support for \(device.address) is not established")
        }
        return MigrationVerdict(
            isMigratable: migratable, handler: handler, reasons: reasons, notes: notes,
            flags: flags, flagsSource: source, variantDriver: candidate?.name ?? bound?.name,
            dirtyTracking: dirtyTracking, iommuDirtyTracking: iommuTracking)
    }

    /// Device dirty tracking: the kernel's answer when it gave one, else the bound variant
    /// driver's entry; nil when neither is known (an unknown driver that could not be probed).
    private func dirtyTracking(bound: VFIOVariantDriver?, probe: VFIODMALoggingOutcome?, notes: inout [String])
        -> MigrationVerdict.DirtyTracking?
    {
        switch probe {
        case .supported?:
            return .init(kind: .dmaLogging, source: .probe)
        case .unsupported(let err)?:
            return .init(kind: .none, source: .probe, detail: "PROBE DMA_LOGGING_START: \(errnoName(err))")
        case .failed(let why)?:
            notes.append("--probe could not ask for DMA logging: \(why)")
        case nil:
            break
        }
        guard let bound else { return nil }
        switch bound.dmaLogging {
        case .yes: return .init(kind: .dmaLogging, source: .driverTable)
        case .no: return .init(kind: .none, source: .driverTable)
        case .ifFirmwareHas(let capability):
            return .init(kind: .dmaLogging, source: .driverTable, detail: "when the firmware has \(capability)")
        }
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

/// `ENOTTY` / `EINVAL` / … or the number.
func errnoName(_ err: Errno) -> String { VFIOCheck.name(err) }
