import Foundation
import PCIDiscovery
import Testing

/// Every defect gives a typed error, a skipped entry with its reason, or a device whose verdict
/// names the defect; none crashes or hangs.
@Suite("Malformed sysfs trees")
struct MalformedTreeTests {
    let advisor = MigrationAdvisor(handlers: shippedModules)

    /// A tree with one good, migratable device (0000:3b:00.1) to damage.
    func goodTree() throws -> FakeSysfs {
        let tree = try FakeSysfs()
        try tree.add(
            .init(
                address: "0000:3b:00.1", vendor: 0x15b3, device: 0x101e, classCode: 0x020000,
                subsystem: (0x15b3, 0x0041), driver: "mlx5_vfio_pci", iommuGroup: 42, numaNode: 0,
                physfn: "0000:3b:00.0"))
        try tree.add(
            .init(
                address: "0000:af:00.0", vendor: 0x8086, device: 0x1572, classCode: 0x020000,
                driver: "i40e", iommuGroup: 60))
        return tree
    }

    /// The damaged device's verdict: not migratable, with a reason that contains `text`.
    func expectReason(_ tree: FakeSysfs, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let device = try scan(tree).device("0000:3b:00.1")
        let verdict = advisor.verdict(for: device)
        #expect(!verdict.isMigratable, sourceLocation: sourceLocation)
        #expect(verdict.reasons.contains { $0.contains(text) }, "reasons: \(verdict.reasons)", sourceLocation: sourceLocation)
    }

    @Test("the undamaged tree is migratable (the baseline the others break)")
    func baseline() throws {
        let device = try scan(goodTree()).device("0000:3b:00.1")
        #expect(advisor.verdict(for: device).isMigratable)
    }

    @Test("a broken driver link: unbound, and the reason says so")
    func brokenDriverLink() throws {
        let tree = try goodTree()
        try tree.link("0000:3b:00.1", "driver", to: "../../../bus/pci/drivers/gone")
        let device = try scan(tree).device("0000:3b:00.1")
        #expect(device.driver == nil)
        try expectReason(tree, "sysfs: the driver link points to ../../../bus/pci/drivers/gone, which does not exist")
    }

    @Test("an absolute driver link is ignored, as libpci does")
    func absoluteDriverLink() throws {
        let tree = try goodTree()
        try tree.link("0000:3b:00.1", "driver", to: tree.sysRoot + "/bus/pci/drivers/mlx5_vfio_pci")
        #expect(try scan(tree).device("0000:3b:00.1").driver == nil)
        try expectReason(tree, "the driver link is absolute")
    }

    @Test("a broken iommu_group link, and one that names no number")
    func brokenGroupLinks() throws {
        let tree = try goodTree()
        try tree.link("0000:3b:00.1", "iommu_group", to: "../../../kernel/iommu_groups/999")
        #expect(try scan(tree).device("0000:3b:00.1").iommuGroup == nil)
        try expectReason(tree, "the iommu_group link points to ../../../kernel/iommu_groups/999, which does not exist")
        try FileManager.default.createDirectory(atPath: tree.sysRoot + "/kernel/iommu_groups/abc", withIntermediateDirectories: true)
        try tree.link("0000:3b:00.1", "iommu_group", to: "../../../kernel/iommu_groups/abc")
        try expectReason(tree, "the iommu_group link names \"abc\", not a group number")
    }

    @Test("a broken entry in devices/ is skipped with its reason; the rest is read")
    func brokenDeviceEntry() throws {
        let tree = try goodTree()
        try tree.link("bus/pci/devices/0000:3b:00.5", to: "../../../devices/pci0000:3b/0000:3b:00.5")
        let result = try scan(tree)
        #expect(result.devices.count == 2)
        #expect(result.skipped == [PCISkippedEntry(name: "0000:3b:00.5", reason: "its entry is a broken symbolic link")])
        #expect(throws: PCIDiscoveryError.unreadableDevice(try address("0000:3b:00.5"), reason: "its entry is a broken symbolic link")) {
            try PCIScanner(options: options(tree)).device(at: address("0000:3b:00.5"))
        }
    }

    @Test("entries that are not PCI addresses are skipped (libpci would stop the whole scan)")
    func strayEntries() throws {
        let tree = try goodTree()
        try tree.writeFile("bus/pci/devices/README", "not a device\n")
        try tree.link("bus/pci/devices/3b:00.2", to: "../../../devices/pci0000:3b/0000:3b:00.1")
        let result = try scan(tree)
        #expect(result.devices.count == 2)
        #expect(result.skipped.map(\.name) == ["3b:00.2", "README"])
    }

    @Test("missing mandatory attributes: the device is skipped, naming the file", arguments: ["vendor", "device", "class"])
    func missingMandatory(attribute: String) throws {
        let tree = try goodTree()
        try tree.removeAttribute("0000:3b:00.1", attribute)
        let result = try scan(tree)
        #expect(result.devices.map(\.address.description) == ["0000:af:00.0"])
        #expect(result.skipped == [PCISkippedEntry(name: "0000:3b:00.1", reason: "no \(attribute) attribute")])
    }

    @Test(
        "missing optional attributes leave fields empty, without problems",
        arguments: ["subsystem_vendor", "revision", "numa_node", "driver_override", "config"])
    func missingOptional(attribute: String) throws {
        let tree = try goodTree()
        try tree.removeAttribute("0000:3b:00.1", attribute)
        let device = try scan(tree).device("0000:3b:00.1")
        #expect(device.problems.isEmpty)
        #expect(device.ids == "15b3:101e")
        #expect(advisor.verdict(for: device).isMigratable)
    }

    @Test("ids without 0x: libpci's reading is shown and flagged")
    func idsWithout0x() throws {
        let tree = try goodTree()
        try tree.write("0000:3b:00.1", "vendor", "15b3")
        try tree.write("0000:3b:00.1", "class", "020000")
        let device = try scan(tree).device("0000:3b:00.1")
        #expect(device.vendorID == 0x000f)  // strtol("15b3", 0) stops at 'b'
        #expect(device.classCode >> 8 == 0x0020)  // "020000" is octal 8192
        #expect(device.problems.count == 2)
        try expectReason(
            tree, "sysfs: vendor holds \"15b3\", not 0x-prefixed hex as the kernel writes it; libpci (and lspci) read it as 000f")
    }

    @Test(
        "garbage in files",
        arguments: [
            ("device", "garbage", "device holds \"garbage\""),
            ("subsystem_vendor", "0xzz", "subsystem_vendor holds \"0xzz\""),
            ("revision", "0x1234", "revision holds \"0x1234\""),
            ("numa_node", "north", "numa_node holds \"north\""),
            ("driver_override", "mlx5 vfio;rm -rf", "driver_override holds \"mlx5 vfio;rm -rf\", not a driver name"),
            ("sriov_numvfs", "-3", "sriov_numvfs holds \"-3\"")
        ])
    func garbage(attribute: String, text: String, reason: String) throws {
        let tree = try goodTree()
        try tree.write("0000:3b:00.1", attribute, text)
        try expectReason(tree, reason)
    }

    @Test("binary garbage is escaped in the reason")
    func binaryGarbage() throws {
        let tree = try goodTree()
        try tree.writeBytes("0000:3b:00.1", "driver_override", [0x01, 0xff, 0x1b, 0x5b, 0x32, 0x4a])
        try expectReason(tree, "driver_override holds \"\\x01\u{FFFD}\\x1b[2J\"")
    }

    @Test("an attribute longer than 4 KiB is refused")
    func hugeAttribute() throws {
        let tree = try goodTree()
        try tree.write("0000:3b:00.1", "driver_override", String(repeating: "x", count: 10_000))
        try expectReason(tree, "driver_override is longer than 4096 bytes")
    }

    @Test("a vendor value libpci finds too long: its fatal error becomes a skipped entry")
    func libpciFatalError() throws {
        let tree = try goodTree()
        try tree.write("0000:3b:00.1", "vendor", "0x" + String(repeating: "0", count: 2000) + "15b3")
        let result = try scan(tree)
        #expect(result.devices.count == 1)
        let skipped = try #require(result.skipped.first)
        #expect(skipped.reason.hasPrefix("libpci pci_fill_info(0000:3b:00.1): Value in "))
        #expect(skipped.reason.hasSuffix("/vendor too long"))
    }

    @Test("a FIFO or a symbolic link as an attribute never blocks and is refused")
    func specialFiles() throws {
        let tree = try goodTree()
        let dir = tree.deviceDirectory("0000:3b:00.1")
        try tree.removeAttribute("0000:3b:00.1", "vendor")
        #expect(mkfifo(dir.appendingPathComponent("vendor").path, 0o644) == 0)
        try tree.link("0000:3b:00.1", "driver_override", to: "/dev/zero")
        let result = try scan(tree)
        #expect(result.skipped == [PCISkippedEntry(name: "0000:3b:00.1", reason: "vendor is not a regular file")])
        try tree.removeAttribute("0000:3b:00.1", "vendor")
        try tree.write("0000:3b:00.1", "vendor", "0x15b3")
        try expectReason(tree, "driver_override is a symbolic link, not a regular file")
    }

    @Test("SR-IOV links that do not add up")
    func brokenSRIOV() throws {
        let tree = try goodTree()
        try tree.write("0000:3b:00.1", "sriov_numvfs", "3")
        try tree.link("0000:3b:00.1", "virtfn0", to: "../0000:3b:00.2")
        try tree.link("0000:3b:00.1", "virtfn1", to: "../not-a-device")
        let device = try scan(tree).device("0000:3b:00.1")
        #expect(device.virtualFunctions.map(\.description) == ["0000:3b:00.2"])
        #expect(
            device.problems == [
                "the virtfn1 link points to ../not-a-device, not to a PCI device",
                "sriov_numvfs is 3 but there is no virtfn2 link"
            ])
    }

    @Test("a tree without devices/ is a typed error; an empty one has no devices")
    func treeErrors() throws {
        let tree = try FakeSysfs()
        let empty = try PCIScanner(options: options(tree)).scan()
        #expect(empty.devices.isEmpty)
        let missing = PCIScanner(options: PCIScanOptions(sysfsRoot: tree.sysRoot + "/nowhere"))
        #expect(
            throws: PCIDiscoveryError.unreadableTree(path: tree.sysRoot + "/nowhere/bus/pci/devices", reason: "No such file or directory")
        ) {
            try missing.scan()
        }
    }

    @Test("a malformed pci.ids is libpci's fatal error, as a Swift error")
    func malformedIDsFile() throws {
        let tree = try goodTree()
        let ids = tree.root.appendingPathComponent("bad.ids")
        try Data("15b3  Mellanox\n\t\t\tthis line is not valid\n".utf8).write(to: ids)
        let scanner = PCIScanner(options: PCIScanOptions(sysfsRoot: tree.sysRoot, idsFile: ids.path, deterministicNames: true))
        do {
            _ = try scanner.scan()
            Issue.record("expected a libpci parse error")
        } catch {
            guard case .libpci(let operation, let message) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(operation == "pci_lookup_name")
            #expect(message == "Parse error at \(ids.path), line 2")
        }
    }
}
