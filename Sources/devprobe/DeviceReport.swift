import CLISupport
import PCIDiscovery

/// A device with its verdict, and the ways devprobe prints it.
struct DeviceReport {
    var device: PCIDevice
    var verdict: MigrationVerdict

    private static func hex<T: BinaryInteger>(_ value: T, _ width: Int) -> String {
        let digits = String(value, radix: 16)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// `Ethernet controller [0200]`.
    var classText: String {
        let c16 = Self.hex(device.classCode >> 8, 4)
        return "\(device.className ?? "Class") [\(c16)]"
    }

    /// `Mellanox Technologies ConnectX Family mlx5Gen Virtual Function`; unknown names read
    /// `Vendor` / `Device`, as in `lspci -nn`, since the ids are printed beside them.
    var names: String {
        "\(device.vendorName ?? "Vendor") \(device.deviceName ?? "Device")"
    }

    /// The block `lspci -Dnnk` would print, followed by what devprobe adds.
    func block(into out: inout Output) {
        var header = "\(device.address) \(classText): \(names) [\(device.ids)]"
        if let rev = device.revision, rev != 0 { header += " (rev \(Self.hex(rev, 2)))" }
        out.line(header)
        if let sv = device.subsystemVendorID, let sd = device.subsystemDeviceID, sv != 0, sv != 0xffff {
            out.line("\tSubsystem: \(device.subsystemVendorName ?? "Vendor") \(device.subsystemName ?? "Device") [\(Self.hex(sv, 4)):\(Self.hex(sd, 4))]")
        }
        if let driver = device.driver { out.line("\tKernel driver in use: \(driver)") }
        var facts: [String] = []
        facts.append("IOMMU group: \(device.iommuGroup.map(String.init) ?? "none")")
        if let node = device.vfioDeviceNode { facts.append("VFIO node: \(node)") }
        if let numa = device.numaNode { facts.append("NUMA node: \(numa)") }
        out.line("\t" + facts.joined(separator: ", "))
        if let override = device.driverOverride { out.line("\tDriver override: \(override)") }
        if let pf = device.physicalFunction { out.line("\tSR-IOV: virtual function of \(pf)") }
        if !device.virtualFunctions.isEmpty {
            out.line("\tSR-IOV: physical function of \(device.virtualFunctions.map(\.description).joined(separator: ", "))")
        }
        if verdict.isMigratable {
            var detail = "handler \(verdict.handler ?? "-")"
            if let flags = verdict.flags, let source = verdict.flagsSource {
                detail += "; \(flags.names.joined(separator: ", ")) \(source == .probe ? "confirmed by the kernel" : "expected from \(device.driver ?? "the driver")")"
            }
            out.line("\tMIGRATABLE: yes (\(detail))")
        } else {
            out.line("\tMIGRATABLE: no")
            for reason in verdict.reasons { out.line("\t  - \(reason)") }
        }
        for note in verdict.notes { out.line("\tNote: \(note)") }
    }

    /// The row of `--table`.
    var row: [String] {
        [device.address.description, device.ids, Self.hex(device.classCode, 6), device.driver ?? "-",
         device.iommuGroup.map(String.init) ?? "-", verdict.isMigratable ? "yes" : "no",
         verdict.handler ?? "-", names]
    }

    static let tableHeader = ["ADDRESS", "IDS", "CLASS", "DRIVER", "IOMMU", "MIGRATABLE", "HANDLER", "DEVICE"]

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
            ("reasons", .strings(verdict.reasons)),
            ("notes", .strings(verdict.notes)),
        ])
    }
}
