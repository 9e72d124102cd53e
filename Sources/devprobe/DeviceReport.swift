import CLISupport
import PCIDiscovery

/// A device with its verdict, and the ways devprobe prints it.
struct DeviceReport {
    var device: PCIDevice
    var verdict: MigrationVerdict

    /// Lower-case hex, zero-padded to `width` digits (at most 16), written into the string's own storage.
    private static func hex<T: FixedWidthInteger & UnsignedInteger>(_ value: T, _ width: Int) -> String {
        let v = UInt64(value)
        var digits = 1
        while digits < 16, v >> (4 * UInt64(digits)) != 0 { digits += 1 }
        let count = max(digits, min(width, 16))
        return String(unsafeUninitializedCapacity: count) { out in
            for i in 0..<count {
                let nibble = UInt8(truncatingIfNeeded: v >> (4 * UInt64(count - 1 - i)) & 0xf)
                out[i] = nibble < 10 ? 0x30 + nibble : 0x61 - 10 + nibble
            }
            return count
        }
    }

    /// `Mellanox Technologies ConnectX Family mlx5Gen Virtual Function`; unknown names read
    /// `Vendor` / `Device`, as in `lspci -nn`, since the ids are printed beside them.
    var names: String {
        "\(device.vendorName ?? "Vendor") \(device.deviceName ?? "Device")"
    }

    /// The block `lspci -Dnnk` would print, followed by what devprobe adds. Written piece by
    /// piece into the output buffer: on a host with thousands of devices this is most of the
    /// work after reading them.
    func block(into out: inout Output) {
        out.write(device.address.description)
        out.write(" ")
        out.write(device.className ?? "Class")
        out.write(" [")
        out.hex(device.classCode >> 8, 4)
        out.write("]: ")
        out.write(device.vendorName ?? "Vendor")
        out.write(" ")
        out.write(device.deviceName ?? "Device")
        out.write(" [")
        out.hex(device.vendorID, 4)
        out.write(":")
        out.hex(device.deviceID, 4)
        out.write("]")
        if let rev = device.revision, rev != 0 {
            out.write(" (rev ")
            out.hex(rev, 2)
            out.write(")")
        }
        out.endLine()
        if let sv = device.subsystemVendorID, let sd = device.subsystemDeviceID, sv != 0, sv != 0xffff {
            out.write("\tSubsystem: ")
            out.write(device.subsystemVendorName ?? "Vendor")
            out.write(" ")
            out.write(device.subsystemName ?? "Device")
            out.write(" [")
            out.hex(sv, 4)
            out.write(":")
            out.hex(sd, 4)
            out.write("]")
            out.endLine()
        }
        if let driver = device.driver {
            out.write("\tKernel driver in use: ")
            out.line(driver)
        }
        out.write("\tIOMMU group: ")
        if let group = device.iommuGroup { out.decimal(group) } else { out.write("none") }
        if let node = device.vfioDeviceNode {
            out.write(", VFIO node: ")
            out.write(node)
        }
        if let numa = device.numaNode {
            out.write(", NUMA node: ")
            out.decimal(numa)
        }
        out.endLine()
        if let override = device.driverOverride {
            out.write("\tDriver override: ")
            out.line(override)
        }
        if let pf = device.physicalFunction {
            out.write("\tSR-IOV: virtual function of ")
            out.line(pf.description)
        }
        if !device.virtualFunctions.isEmpty {
            out.write("\tSR-IOV: physical function of ")
            for (i, vf) in device.virtualFunctions.enumerated() {
                if i > 0 { out.write(", ") }
                out.write(vf.description)
            }
            out.endLine()
        }
        if verdict.isMigratable {
            out.write("\tMIGRATABLE: yes (handler ")
            out.write(verdict.handler ?? "-")
            if let flags = verdict.flags, let source = verdict.flagsSource {
                out.write("; ")
                out.write(flags.names.joined(separator: ", "))
                if source == .probe {
                    out.write(" confirmed by the kernel")
                } else {
                    out.write(" expected from ")
                    out.write(device.driver ?? "the driver")
                }
            }
            out.line(")")
        } else {
            out.line("\tMIGRATABLE: no")
            for reason in verdict.reasons {
                out.write("\t  - ")
                out.line(reason)
            }
        }
        if let p2p = verdict.p2p { out.line(p2p ? "\tP2P: yes" : "\tP2P: no") }
        if let tracking = verdict.dirtyTracking {
            out.write("\tDirty tracking: ")
            out.line(dirtyTrackingText(tracking))
        }
        if let iommu = verdict.iommuDirtyTracking {
            out.write("\tIOMMU dirty tracking: ")
            switch iommu.kind {
            case .type1: out.line("type1 container (confirmed by the kernel: VFIO_IOMMU_GET_INFO has the migration capability)")
            case .iommufd: out.line("iommufd HWPT (confirmed by the kernel: IOMMU_HWPT_ALLOC with DIRTY_TRACKING)")
            case .none: out.line("none (confirmed by the kernel: \(iommu.detail ?? "no answer"))")
            }
        }
        if let offered = verdict.trackingOffered {
            out.write("\tTracking offered: ")
            switch offered {
            case .deviceDMALogging: out.line("device DMA logging")
            case .iommuType1: out.line("IOMMU type1")
            case .iommufd: out.line("iommufd")
            case .none: out.line("none")
            }
        }
        for note in verdict.notes {
            out.write("\tNote: ")
            out.line(note)
        }
    }

    /// `device DMA logging (expected from pds_vfio_pci)`, `none on the device (confirmed by the kernel: …)`.
    private func dirtyTrackingText(_ tracking: MigrationVerdict.DirtyTracking) -> String {
        let what = tracking.kind == .dmaLogging ? "device DMA logging" : "none on the device"
        var source = tracking.source == .probe ? "confirmed by the kernel" : "expected from \(device.driver ?? "the driver")"
        if let detail = tracking.detail { source += tracking.source == .probe ? ": \(detail)" : " \(detail)" }
        return "\(what) (\(source))"
    }

    /// The row of `--table`.
    var row: [String] {
        [
            device.address.description, device.ids, Self.hex(device.classCode, 6), device.driver ?? "-",
            device.iommuGroup.map(String.init) ?? "-", verdict.isMigratable ? "yes" : "no",
            verdict.handler ?? "-", verdict.p2p.map { $0 ? "yes" : "no" } ?? "-",
            verdict.dirtyTracking?.kind.rawValue ?? "-", verdict.trackingOffered?.rawValue ?? "-", names
        ]
    }

    static let tableHeader = ["ADDRESS", "IDS", "CLASS", "DRIVER", "IOMMU", "MIGRATABLE", "HANDLER", "P2P", "DIRTY", "TRACKING", "DEVICE"]

    /// One device in `--json`: the documented keys, in this order.
    var json: JSONValue {
        let d = device
        return .object([
            ("address", .string(d.address.description)),
            ("vendorID", .string(Self.hex(d.vendorID, 4))),
            ("deviceID", .string(Self.hex(d.deviceID, 4))),
            ("subsystemVendorID", .optional(d.subsystemVendorID.map { Self.hex($0, 4) })),
            ("subsystemDeviceID", .optional(d.subsystemDeviceID.map { Self.hex($0, 4) })),
            ("classCode", .string(Self.hex(d.classCode, 6))),
            ("revision", .optional(d.revision.map { Self.hex($0, 2) })),
            ("vendorName", .optional(d.vendorName)),
            ("deviceName", .optional(d.deviceName)),
            ("subsystemVendorName", .optional(d.subsystemVendorName)),
            ("subsystemName", .optional(d.subsystemName)),
            ("className", .optional(d.className)),
            ("driver", .optional(d.driver)),
            ("driverOverride", .optional(d.driverOverride)),
            ("iommuGroup", .optional(d.iommuGroup)),
            ("numaNode", .optional(d.numaNode)),
            ("physicalFunction", .optional(d.physicalFunction?.description)),
            ("virtualFunctions", .strings(d.virtualFunctions.map(\.description))),
            ("vfioDeviceNode", .optional(d.vfioDeviceNode)),
            ("migratable", .bool(verdict.isMigratable)),
            ("handler", .optional(verdict.handler)),
            ("variantDriver", .optional(verdict.variantDriver)),
            ("migrationFlags", verdict.flags.map { .strings($0.names) } ?? .null),
            ("migrationFlagsSource", .optional(verdict.flagsSource?.rawValue)),
            ("p2p", verdict.p2p.map { .bool($0) } ?? .null),
            ("dirtyTracking", .optional(verdict.dirtyTracking?.kind.rawValue)),
            ("dirtyTrackingSource", .optional(verdict.dirtyTracking?.source.rawValue)),
            ("iommuDirtyTracking", .optional(verdict.iommuDirtyTracking?.kind.rawValue)),
            ("iommuDirtyTrackingDetail", .optional(verdict.iommuDirtyTracking?.detail)),
            ("trackingOffered", .optional(verdict.trackingOffered?.rawValue)),
            ("reasons", .strings(verdict.reasons)),
            ("notes", .strings(verdict.notes))
        ])
    }
}
