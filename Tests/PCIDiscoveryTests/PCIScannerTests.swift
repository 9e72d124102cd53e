import PCIDiscovery
import Testing

@Suite("Reading a fake sysfs tree")
struct PCIScannerTests {
    @Test("every device of the standard tree is read, sorted by address")
    func listsAllDevicesSorted() throws {
        let tree = try FakeSysfs.standard()
        let result = try scan(tree)
        #expect(
            result.devices.map(\.address.description) == [
                "0000:3b:00.0", "0000:3b:00.1", "0000:3b:00.2", "0000:5e:01.0",
                "0000:7d:00.1", "0000:81:00.1", "0000:af:00.0", "0000:d8:00.0"
            ])
        #expect(result.skipped.isEmpty)
        #expect(result.devices.allSatisfy { $0.problems.isEmpty })
    }

    @Test("a ConnectX-7 VF on mlx5_vfio_pci: every field")
    func connectX7VirtualFunction() throws {
        let d = try scan(FakeSysfs.standard()).device("0000:3b:00.1")
        #expect(d.vendorID == 0x15b3)
        #expect(d.deviceID == 0x101e)
        #expect(d.subsystemVendorID == 0x15b3)
        #expect(d.subsystemDeviceID == 0x0041)
        #expect(d.classCode == 0x020000)
        #expect(d.revision == 0)
        #expect(d.vendorName == "Mellanox Technologies")
        #expect(d.deviceName == "ConnectX Family mlx5Gen Virtual Function")
        #expect(d.subsystemVendorName == "Mellanox Technologies")
        #expect(d.subsystemName == "ConnectX-7 VF fixture")
        #expect(d.className == "Ethernet controller")
        #expect(d.driver == "mlx5_vfio_pci")
        #expect(d.iommuGroup == 42)
        #expect(d.driverOverride == "mlx5_vfio_pci")
        #expect(d.physicalFunction == (try address("0000:3b:00.0")))
        #expect(d.virtualFunctions.isEmpty)
        #expect(d.numaNode == 0)
        #expect(d.vfioCdevName == "vfio3")
        #expect(d.vfioDeviceNode == "/dev/vfio/devices/vfio3")
        #expect(d.vfioGroupPath == "/dev/vfio/42")
        #expect(d.ids == "15b3:101e")
        #expect(d.isVirtualFunction)
    }

    @Test("an SR-IOV PF lists its VFs; a VF on vfio-pci has the group node")
    func sriovLinks() throws {
        let result = try scan(FakeSysfs.standard())
        let pf = try result.device("0000:3b:00.0")
        #expect(pf.virtualFunctions.map(\.description) == ["0000:3b:00.1", "0000:3b:00.2"])
        #expect(pf.physicalFunction == nil)
        #expect(pf.driver == "mlx5_core")
        #expect(pf.vfioDeviceNode == nil)
        #expect(pf.deviceName == "MT2910 Family [ConnectX-7]")
        let vf = try result.device("0000:3b:00.2")
        #expect(vf.driver == "vfio-pci")
        #expect(vf.vfioDeviceNode == "/dev/vfio/43")
    }

    @Test("an Intel VF, a NIC on its own driver, an unbound device")
    func otherDevices() throws {
        let result = try scan(FakeSysfs.standard())
        let intel = try result.device("0000:5e:01.0")
        #expect(intel.ids == "8086:1889")
        #expect(intel.revision == 1)
        #expect(intel.driver == "vfio-pci")
        #expect(intel.numaNode == 1)
        #expect(intel.driverOverride == nil)
        #expect(intel.subsystemName == nil)  // 8086:0000 is not in the fixture ids
        let nic = try result.device("0000:af:00.0")
        #expect(nic.driver == "i40e")
        #expect(nic.iommuGroup == 60)
        let unbound = try result.device("0000:d8:00.0")
        #expect(unbound.driver == nil)
        #expect(unbound.iommuGroup == nil)
        #expect(unbound.numaNode == nil)
        #expect(unbound.vendorName == "Red Hat, Inc.")
        let hisi = try result.device("0000:7d:00.1")
        #expect(hisi.classCode == 0x108000)
        #expect(hisi.className == "Encryption controller")
        #expect(hisi.subsystemVendorID == nil)
    }

    @Test("one device is read without the others")
    func singleDevice() throws {
        let tree = try FakeSysfs.standard()
        let d = try PCIScanner(options: options(tree)).device(at: address("3b:00.1"))
        #expect(d.driver == "mlx5_vfio_pci")
        #expect(throws: PCIDiscoveryError.deviceNotFound(try address("0000:3b:00.7"), sysfsPath: tree.sysfsPath)) {
            try PCIScanner(options: options(tree)).device(at: address("0000:3b:00.7"))
        }
    }

    @Test("unknown ids have no names; lookups can be turned off")
    func names() throws {
        let tree = try FakeSysfs()
        try tree.add(.init(address: "0000:01:00.0", vendor: 0xabcd, device: 0x1234, classCode: 0xff0000))
        var opts = try options(tree)
        var d = try PCIScanner(options: opts).scan().device("0000:01:00.0")
        #expect(d.vendorName == nil)
        #expect(d.deviceName == nil)
        #expect(d.className == nil)
        opts.lookUpNames = false
        try tree.add(.init(address: "0000:02:00.0", vendor: 0x15b3, device: 0x101e, classCode: 0x020000))
        d = try PCIScanner(options: opts).scan().device("0000:02:00.0")
        #expect(d.vendorName == nil)
    }

    @Test("sixteen scans at once on different threads")
    func concurrentScans() async throws {
        let tree = try FakeSysfs.standard()
        let opts = try options(tree)
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<16 { group.addTask { try PCIScanner(options: opts).scan().devices.count } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(counts == Array(repeating: 8, count: 16))
    }
}

@Suite("PCI addresses")
struct PCIAddressTests {
    @Test(
        "parse and print",
        arguments: [
            ("0000:3b:00.1", "0000:3b:00.1"), ("3b:00.1", "0000:3b:00.1"), ("0000:3B:1F.7", "0000:3b:1f.7"),
            ("10000:00:02.0", "10000:00:02.0")
        ])
    func roundTrip(input: String, printed: String) throws {
        #expect(try address(input).description == printed)
    }

    @Test(
        "reject what is not an address",
        arguments: [
            "", "README", "0000:3b:00", "0000:3b:20.0", "0000:3b:00.8", "0000:3b:00.10", "0000::00.1",
            "x000:3b:00.1", "0000:3b:00.1 ", "123456789:00:00.0", "0000:3b:00:00.1"
        ])
    func rejects(input: String) {
        #expect(PCIAddress(input) == nil)
    }

    @Test("order is domain, bus, device, function")
    func order() throws {
        #expect(try address("0000:3b:00.1") < address("0000:3b:01.0"))
        #expect(try address("0000:ff:1f.7") < address("0001:00:00.0"))
    }
}
