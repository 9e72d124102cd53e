import Foundation

/// A fake sysfs tree in a temporary directory, laid out as the kernel lays out /sys:
/// real device directories under `sys/devices/pciDDDD:BB/`, `sys/bus/pci/devices/<BDF>` links to
/// them, relative `driver` / `iommu_group` / `physfn` / `virtfnN` links, attribute files with the
/// kernel's `0x` formatting and a 256-byte config space.
final class FakeSysfs {
    let root: URL
    private let fm = FileManager.default

    /// The directory to pass as `--sysfs-root` (it holds `bus/pci/devices`).
    var sysRoot: String { root.appendingPathComponent("sys").path }
    /// libpci's `sysfs.path` for this tree.
    var sysfsPath: String { sysRoot + "/bus/pci" }

    struct Device {
        var address: String
        var vendor: UInt16
        var device: UInt16
        var classCode: UInt32
        var subsystem: (vendor: UInt16, device: UInt16)? = nil
        var revision: UInt8 = 0
        var driver: String? = nil
        var iommuGroup: Int? = nil
        var numaNode: Int = -1
        var driverOverride: String? = nil
        var physfn: String? = nil
        var virtfns: [String] = []
        var vfioCdev: String? = nil
    }

    init() throws {
        root = fm.temporaryDirectory.appendingPathComponent("fakesysfs-\(UUID().uuidString)")
        for dir in ["sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/kernel/iommu_groups"] {
            try fm.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
    }

    deinit { try? fm.removeItem(at: root) }

    /// The real directory of a device (`sys/devices/pci0000:3b/0000:3b:00.1`).
    func deviceDirectory(_ bdf: String) -> URL {
        root.appendingPathComponent("sys/devices/pci\(bdf.prefix(7))/\(bdf)")
    }

    func add(_ d: Device) throws {
        let dir = deviceDirectory(d.address)
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        try write(d.address, "vendor", "0x" + hex(d.vendor, 4))
        try write(d.address, "device", "0x" + hex(d.device, 4))
        try write(d.address, "class", "0x" + hex(d.classCode, 6))
        try write(d.address, "revision", "0x" + hex(d.revision, 2))
        if let sub = d.subsystem {
            try write(d.address, "subsystem_vendor", "0x" + hex(sub.vendor, 4))
            try write(d.address, "subsystem_device", "0x" + hex(sub.device, 4))
        }
        try write(d.address, "numa_node", String(d.numaNode))
        try write(d.address, "driver_override", d.driverOverride ?? "(null)")
        var config = [UInt8](repeating: 0, count: 256)
        config[0] = UInt8(d.vendor & 0xff)
        config[1] = UInt8(d.vendor >> 8)
        config[2] = UInt8(d.device & 0xff)
        config[3] = UInt8(d.device >> 8)
        config[8] = d.revision
        config[9] = UInt8(d.classCode & 0xff)
        config[10] = UInt8((d.classCode >> 8) & 0xff)
        config[11] = UInt8(d.classCode >> 16)
        if let sub = d.subsystem {
            config[0x2c] = UInt8(sub.vendor & 0xff)
            config[0x2d] = UInt8(sub.vendor >> 8)
            config[0x2e] = UInt8(sub.device & 0xff)
            config[0x2f] = UInt8(sub.device >> 8)
        }
        try Data(config).write(to: dir.appendingPathComponent("config"))
        try link("bus/pci/devices/\(d.address)", to: "../../../devices/pci\(d.address.prefix(7))/\(d.address)")
        if let driver = d.driver {
            try fm.createDirectory(
                at: root.appendingPathComponent("sys/bus/pci/drivers/\(driver)"),
                withIntermediateDirectories: true)
            try link(d.address, "driver", to: "../../../bus/pci/drivers/\(driver)")
        }
        if let group = d.iommuGroup {
            try fm.createDirectory(
                at: root.appendingPathComponent("sys/kernel/iommu_groups/\(group)/devices"),
                withIntermediateDirectories: true)
            try link(d.address, "iommu_group", to: "../../../kernel/iommu_groups/\(group)")
        }
        if let pf = d.physfn { try link(d.address, "physfn", to: "../\(pf)") }
        if !d.virtfns.isEmpty {
            try write(d.address, "sriov_totalvfs", String(d.virtfns.count))
            try write(d.address, "sriov_numvfs", String(d.virtfns.count))
            for (i, vf) in d.virtfns.enumerated() { try link(d.address, "virtfn\(i)", to: "../\(vf)") }
        }
        if let cdev = d.vfioCdev {
            try fm.createDirectory(at: dir.appendingPathComponent("vfio-dev/\(cdev)"), withIntermediateDirectories: true)
        }
    }

    /// Writes an attribute as given (a newline is added, as the kernel does).
    func write(_ bdf: String, _ name: String, _ text: String) throws {
        try Data((text + "\n").utf8).write(to: deviceDirectory(bdf).appendingPathComponent(name))
    }

    /// Writes raw bytes into an attribute.
    func writeBytes(_ bdf: String, _ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: deviceDirectory(bdf).appendingPathComponent(name))
    }

    func removeAttribute(_ bdf: String, _ name: String) throws {
        try fm.removeItem(at: deviceDirectory(bdf).appendingPathComponent(name))
    }

    /// A symbolic link inside a device's directory, target kept exactly as given.
    func link(_ bdf: String, _ name: String, to target: String) throws {
        let path = deviceDirectory(bdf).appendingPathComponent(name).path
        try? fm.removeItem(atPath: path)
        try fm.createSymbolicLink(atPath: path, withDestinationPath: target)
    }

    /// A symbolic link at a path relative to `sys/`.
    func link(_ path: String, to target: String) throws {
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("sys/" + path).path, withDestinationPath: target)
    }

    /// Writes a file at a path relative to `sys/`.
    func writeFile(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: root.appendingPathComponent("sys/" + path))
    }

    /// A pci.ids with just the fixture's ids, for names that do not depend on the host.
    func writeIDs() throws -> String {
        let url = root.appendingPathComponent("pci.ids")
        try Data(FakeSysfs.pciIDs.utf8).write(to: url)
        return url.path
    }

    static let pciIDs = """
        # fixture pci.ids
        15b3  Mellanox Technologies
        \t1021  MT2910 Family [ConnectX-7]
        \t101e  ConnectX Family mlx5Gen Virtual Function
        \t\t15b3 0041  ConnectX-7 VF fixture
        19e5  Huawei Technologies Co., Ltd.
        \ta256  Hi1620 HPRE Engine Virtual Function
        1af4  Red Hat, Inc.
        \t1041  Virtio 1.0 network device
        1dd8  AMD Pensando Systems
        \t1003  DSC Ethernet Virtual Function
        8086  Intel Corporation
        \t1572  Ethernet Controller X710 for 10GbE SFP+
        \t1889  Ethernet Adaptive Virtual Function
        C 02  Network controller
        \t00  Ethernet controller
        C 10  Encryption controller
        \t80  Encryption controller

        """

    /// The tree most tests read: one device of each kind the verdict distinguishes.
    static func standard() throws -> FakeSysfs {
        let t = try FakeSysfs()
        let cx7Sub = (vendor: UInt16(0x15b3), device: UInt16(0x0041))
        try t.add(
            Device(
                address: "0000:3b:00.0", vendor: 0x15b3, device: 0x1021, classCode: 0x020000,
                subsystem: cx7Sub, driver: "mlx5_core", iommuGroup: 40, numaNode: 0,
                virtfns: ["0000:3b:00.1", "0000:3b:00.2"]))
        try t.add(
            Device(
                address: "0000:3b:00.1", vendor: 0x15b3, device: 0x101e, classCode: 0x020000,
                subsystem: cx7Sub, driver: "mlx5_vfio_pci", iommuGroup: 42, numaNode: 0,
                driverOverride: "mlx5_vfio_pci", physfn: "0000:3b:00.0", vfioCdev: "vfio3"))
        try t.add(
            Device(
                address: "0000:3b:00.2", vendor: 0x15b3, device: 0x101e, classCode: 0x020000,
                subsystem: cx7Sub, driver: "vfio-pci", iommuGroup: 43, numaNode: 0,
                driverOverride: "vfio-pci", physfn: "0000:3b:00.0"))
        try t.add(
            Device(
                address: "0000:5e:01.0", vendor: 0x8086, device: 0x1889, classCode: 0x020000,
                subsystem: (0x8086, 0x0000), revision: 0x01, driver: "vfio-pci", iommuGroup: 51, numaNode: 1))
        try t.add(
            Device(
                address: "0000:7d:00.1", vendor: 0x19e5, device: 0xa256, classCode: 0x108000,
                revision: 0x21, driver: "hisi_acc_vfio_pci", iommuGroup: 70, numaNode: 0))
        try t.add(
            Device(
                address: "0000:81:00.1", vendor: 0x1dd8, device: 0x1003, classCode: 0x020000,
                driver: "pds_vfio_pci", iommuGroup: 80, numaNode: 1))
        try t.add(
            Device(
                address: "0000:af:00.0", vendor: 0x8086, device: 0x1572, classCode: 0x020000,
                subsystem: (0x8086, 0x0001), revision: 0x02, driver: "i40e", iommuGroup: 60, numaNode: 1))
        try t.add(
            Device(
                address: "0000:d8:00.0", vendor: 0x1af4, device: 0x1041, classCode: 0x020000,
                subsystem: (0x1af4, 0x1100), revision: 0x01))
        return t
    }

    private func hex<T: BinaryInteger>(_ v: T, _ width: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
}
