import DeviceMatch
import Testing

@Suite struct PCIMatchTableTests {
    let cx7VF = PCIIdentity(
        vendorID: 0x15b3, deviceID: 0x101e, subsystemVendorID: 0x15b3,
        subsystemDeviceID: 0x0023, classCode: 0x020000, driver: "mlx5_vfio_pci")

    @Test func mostSpecificRuleWins() {
        let table = PCIMatchTable([
            VendorModuleDescriptor(name: "any-nvidia", rules: [PCIMatchRule(vendorID: 0x15b3)]),
            VendorModuleDescriptor(name: "mlx5", rules: [PCIMatchRule(vendorID: 0x15b3, deviceID: 0x101e)]),
            VendorModuleDescriptor(name: "generic", rules: [], isGenericFallback: true)
        ])
        #expect(table.bestMatch(for: cx7VF)?.module.name == "mlx5")
    }

    @Test func genericFallbackOnlyWhenNothingElseMatches() {
        let table = PCIMatchTable([
            VendorModuleDescriptor(name: "generic", rules: [], isGenericFallback: true),
            VendorModuleDescriptor(name: "mlx5", rules: [PCIMatchRule(vendorID: 0x15b3, deviceID: 0x101e)])
        ])
        #expect(table.bestMatch(for: cx7VF)?.module.name == "mlx5")
        let intel = PCIIdentity(vendorID: 0x8086, deviceID: 0x1889, classCode: 0x020000, driver: "vfio-pci")
        #expect(table.bestMatch(for: intel)?.module.name == "generic")
    }

    @Test func driverAndClassAreCompared() {
        let rule = PCIMatchRule(vendorID: 0x15b3, classCode: 0x020000, classMask: 0xFFFF00, driver: "mlx5_vfio_pci")
        #expect(rule.matches(cx7VF))
        var other = cx7VF
        other.driver = "mlx5_core"
        #expect(!rule.matches(other))
        other = cx7VF
        other.classCode = 0x010802
        #expect(!rule.matches(other))
        #expect(PCIMatchTable([VendorModuleDescriptor(name: "x", rules: [rule])]).bestMatch(for: other) == nil)
    }

    @Test func descriptionNamesEveryField() {
        let rule = PCIMatchRule(vendorID: 0x15b3, deviceID: 0x101e, classCode: 0x20000, driver: "mlx5_vfio_pci")
        #expect(rule.description == "15b3:101e class 020000/ffffff driver mlx5_vfio_pci")
    }
}
