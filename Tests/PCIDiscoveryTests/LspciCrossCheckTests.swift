import Foundation
import PCIDiscovery
import Testing

/// The same trees read by pciutils' `lspci -nnk`: ids, class and driver must agree.
@Suite("Agreement with lspci")
struct LspciCrossCheckTests {
    /// What `lspci -Dnnk` says about one device.
    struct LspciDevice: Equatable {
        var ids: String
        var class16: String
        var driver: String?
    }

    /// Parses `lspci -Dnnk`: the header line's first `[cccc]` after the address is the class,
    /// its last `[vvvv:dddd]` the ids (names may contain brackets), then `Kernel driver in use:`.
    static func parse(_ text: String) -> [String: LspciDevice] {
        var devices: [String: LspciDevice] = [:]
        var current: String?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("\t") {
                if let current, line.hasPrefix("\tKernel driver in use: ") {
                    devices[current]?.driver = String(line.dropFirst("\tKernel driver in use: ".count))
                }
                continue
            }
            guard let space = line.firstIndex(of: " ") else { continue }
            let address = String(line[..<space])
            let rest = line[space...]
            guard let classOpen = rest.firstIndex(of: "["),
                let classClose = rest[classOpen...].firstIndex(of: "]"),
                let idsOpen = rest.range(of: " [", options: .backwards),
                let idsClose = rest[idsOpen.upperBound...].firstIndex(of: "]")
            else { continue }
            let idsText = String(rest[idsOpen.upperBound..<idsClose])
            devices[address] = LspciDevice(ids: idsText, class16: String(rest[rest.index(after: classOpen)..<classClose]), driver: nil)
            current = address
        }
        return devices
    }

    func lspci() -> String? {
        executable(["/usr/bin/lspci", "/usr/sbin/lspci", "/bin/lspci", "/sbin/lspci"])
    }

    func crossCheck(_ tree: FakeSysfs, sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard let lspci = lspci() else {
            print("SKIPPED: lspci is not installed (apt-get install pciutils); the cross-check did not run")
            withKnownIssue("lspci missing: cross-check not run") { throw CancellationError() }
            return
        }
        let result = try run(
            lspci,
            [
                "-Dnnk", "-A", "linux-sysfs", "-O", "sysfs.path=\(tree.sysfsPath)",
                "-i", try tree.writeIDs(), "-O", "hwdb.disable=1"
            ])
        #expect(result.status == 0, "lspci: \(result.stderr)", sourceLocation: sourceLocation)
        let theirs = Self.parse(result.stdout)
        let ours = try scan(tree).devices
        #expect(!ours.isEmpty, sourceLocation: sourceLocation)
        #expect(Set(theirs.keys) == Set(ours.map(\.address.description)), sourceLocation: sourceLocation)
        for device in ours {
            let mine = LspciDevice(
                ids: device.ids, class16: String(device.classCode >> 8, radix: 16).leftPadded(4),
                driver: device.driver)
            #expect(theirs[device.address.description] == mine, "\(device.address)", sourceLocation: sourceLocation)
        }
    }

    @Test("the standard tree")
    func standardTree() throws {
        try crossCheck(FakeSysfs.standard())
    }

    @Test("trees with defects lspci survives: broken links, ids without 0x, garbage, missing files")
    func damagedTrees() throws {
        let tree = try FakeSysfs.standard()
        try tree.link("0000:3b:00.2", "driver", to: "../../../bus/pci/drivers/gone")
        try tree.link("0000:5e:01.0", "iommu_group", to: "../../../kernel/iommu_groups/999")
        try tree.write("0000:7d:00.1", "vendor", "19e5")
        try tree.write("0000:81:00.1", "class", "020000")
        try tree.write("0000:af:00.0", "device", "garbage")
        try tree.removeAttribute("0000:d8:00.0", "subsystem_vendor")
        try tree.removeAttribute("0000:d8:00.0", "revision")
        try tree.link("0000:3b:00.0", "driver", to: tree.sysRoot + "/bus/pci/drivers/mlx5_core")
        try crossCheck(tree)
    }

    @Test("the benchmark's generated tree (scripts/bench-devprobe.sh --generate)")
    func generatedTree() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/bench-devprobe.sh").path
        guard executable(["/usr/bin/python3"]) != nil else {
            print("SKIPPED: python3 is not installed; the generated tree was not checked")
            withKnownIssue("python3 missing") { throw CancellationError() }
            return
        }
        let tree = try FakeSysfs()
        let generated = try run("/bin/bash", [script, "--generate", tree.root.path, "--devices", "64"])
        #expect(generated.status == 0, "\(generated.stderr)")
        try crossCheck(tree)
        let advisor = MigrationAdvisor(handlers: shippedModules)
        let verdicts = try scan(tree).devices.map { advisor.verdict(for: $0) }
        #expect(verdicts.count == 64)
        #expect(verdicts.contains { $0.isMigratable && $0.handler == "mlx5" })
        #expect(verdicts.contains { !$0.isMigratable })
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
