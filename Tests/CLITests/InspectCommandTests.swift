import Foundation
import Testing

/// `switchover inspect`, run as the built binary (`swift build --build-tests` builds it beside
/// the test bundle).
@Suite struct InspectCommandTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("MigrationStreamTests/Fixtures")

    static func run(_ arguments: [String]) throws -> BuiltProduct.Result {
        try BuiltProduct.run("switchover", arguments)
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID().uuidString)-\(name)").path
    }

    @Test func inspectPrintsEverySectionWithItsRAMSummary() throws {
        let run = try Self.run(["inspect", Self.fixtures.appendingPathComponent("qemu72-pc-i440fx-paused.mig").path])
        #expect(run.status == 0)
        let lines = run.stdout.split(separator: "\n")
        #expect(lines.count == 1 + 35 + 1)
        #expect(lines.first?.hasPrefix("OFFSET") == true)
        #expect(lines[1].hasPrefix("0000001a  start             2  ram"))
        #expect(lines[1].contains("ram: total 17309696 B, blocks pc.ram=16777216"))
        #expect(lines.contains { $0.hasPrefix("0003a59d  full              0  timer") && $0.hasSuffix("24  length from VMDESCRIPTION") })
        #expect(lines.last == "35 records; machine pc-i440fx-7.2; savevm version 3")
    }

    @Test func inspectJSONIsOneObjectWithEveryRecord() throws {
        let run = try Self.run(["inspect", "--json", Self.fixtures.appendingPathComponent("qemu72-q35-booted.mig").path])
        #expect(run.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(object["version"] as? Int == 3)
        #expect(object["machine"] as? String == "pc-q35-7.2")
        let records = try #require(object["records"] as? [[String: Any]])
        #expect(records.count == 34)
        #expect(records.first?["kind"] as? String == "start")
        #expect(records.first?["idstr"] as? String == "ram")
        #expect(records.last?["kind"] as? String == "vmdescription")
        #expect(records.last?["idstr"] == nil)
    }

    @Test(arguments: ["qemu72-pc-i440fx-paused.mig", "qemu72-q35-booted.mig"])
    func rewriteWritesAByteIdenticalFile(name: String) throws {
        let input = Self.fixtures.appendingPathComponent(name).path
        let output = Self.temporaryPath(name)
        defer { try? FileManager.default.removeItem(atPath: output) }
        let run = try Self.run(["inspect", "--rewrite", output, input])
        #expect(run.status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == Data(contentsOf: URL(fileURLWithPath: input)))
    }

    @Test func malformedFileGivesOneErrorLineWithTheOffsetAndAFailureStatus() throws {
        let input = Self.temporaryPath("truncated.mig")
        defer { try? FileManager.default.removeItem(atPath: input) }
        let bytes = try Data(contentsOf: Self.fixtures.appendingPathComponent("qemu72-pc-i440fx-paused.mig"))
        try bytes.prefix(1000).write(to: URL(fileURLWithPath: input))
        let run = try Self.run(["inspect", input])
        #expect(run.status == 1)
        #expect(
            run.stderr == "switchover inspect: \(input): stream ends at byte 1000 (0x3e8): expected a ram record (be64 address and flags)\n"
        )
    }

    @Test func badMagicIsNamedWithItsOffset() throws {
        let input = Self.temporaryPath("bad.mig")
        defer { try? FileManager.default.removeItem(atPath: input) }
        try Data([0x51, 0x45, 0x56, 0x4E, 0, 0, 0, 3]).write(to: URL(fileURLWithPath: input))
        let run = try Self.run(["inspect", "--json", input])
        #expect(run.status == 1)
        #expect(run.stdout.isEmpty)
        #expect(run.stderr == "switchover inspect: \(input): bad magic at byte 0 (0x0): expected 0x5145564d (\"QEVM\"), found 0x5145564e\n")
    }
}
