import MigrationCore
import MigrationStream
import Testing

@Suite struct RegistryTests {
    @Test func aDuplicateRegistrationIsRefused() throws {
        let registry = HandlerRegistry()
        try registry.register(FullStateHandler(), idstr: "timer", instanceID: 0, versionID: 2)
        #expect(throws: RegistryError.duplicate(idstr: "timer", instanceID: 0)) {
            try registry.register(FullStateHandler(), idstr: "timer", instanceID: 0, versionID: 2)
        }
        #expect(registry.entries.count == 1)
    }

    @Test func instanceIDsAreAssignedAsQEMUDoes() throws {
        let registry = HandlerRegistry()
        let a = try registry.register(FullStateHandler(), idstr: "serial", versionID: 1)
        let b = try registry.register(FullStateHandler(), idstr: "serial", versionID: 1)
        try registry.register(FullStateHandler(), idstr: "serial", instanceID: 5, versionID: 1)
        let d = try registry.register(FullStateHandler(), idstr: "serial", versionID: 1)
        let other = try registry.register(FullStateHandler(), idstr: "rtc", versionID: 1)
        #expect([a.instanceID, b.instanceID, d.instanceID, other.instanceID] == [0, 1, 6, 0])
    }

    @Test func emissionOrderIsPriorityThenRegistration() throws {
        let registry = HandlerRegistry()
        try registry.register(FullStateHandler(), idstr: "a", versionID: 1)
        try registry.register(FullStateHandler(), idstr: "b", versionID: 1, priority: .pciBus)
        try registry.register(FullStateHandler(), idstr: "c", versionID: 1)
        try registry.register(FullStateHandler(), idstr: "d", versionID: 1, priority: .low)
        try registry.register(FullStateHandler(), idstr: "e", versionID: 1, priority: .pciBus)
        #expect(registry.entries.map(\.identity.idstr) == ["b", "e", "a", "c", "d"])
        // Section ids follow registration, not emission (QEMU's global counter), from 1: a QEMU
        // destination takes a PART of section 0 for the first handler it has not seen a START for.
        #expect(registry.entries.map(\.sectionID) == [2, 5, 1, 3, 4])
        #expect(registry.entry(idstr: "c", instanceID: 0)?.sectionID == 3)
        #expect(!registry.entries.contains { $0.sectionID == 0 })
    }

    @Test func anIDStringMustFitASectionHeader() {
        let registry = HandlerRegistry()
        #expect(throws: RegistryError.invalidIDString("")) { try registry.register(FullStateHandler(), idstr: "", versionID: 1) }
        let long = String(repeating: "x", count: 256)
        #expect(throws: RegistryError.invalidIDString(long)) { try registry.register(FullStateHandler(), idstr: long, versionID: 1) }
    }
}
