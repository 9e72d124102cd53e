import Foundation
import Testing

@Suite struct MatchTableCompilerTests {
    func withTable(_ text: String, _ body: (String, String) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appending(path: "matchtable-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appending(path: "acme-devices.matchtable").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: input))
        try body(input, dir.appending(path: "out.swift").path)
    }

    @Test func aMalformedEntryFailsWithFileLineAndReason() throws {
        try withTable("vendor=1234\nvendor=1234 device=12345\n") { input, output in
            let result = try BuiltProduct.run("match-table-compiler", [input, output])
            #expect(result.status == 1)
            #expect(result.stderr == "\(input):2: error: device \"12345\" is not 4 hex digits\n")
            #expect(!FileManager.default.fileExists(atPath: output))
        }
    }

    @Test func aTableWithoutRulesIsRefused() throws {
        try withTable("# nothing here\n") { input, output in
            let result = try BuiltProduct.run("match-table-compiler", [input, output])
            #expect(result.status == 1)
            #expect(result.stderr.contains("error: the table has no rules"))
        }
    }

    @Test func aGoodTableBecomesASwiftEnumNamedAfterTheFile() throws {
        try withTable("vendor=1234 device=0001 driver=acme_vfio_pci\n") { input, output in
            let result = try BuiltProduct.run("match-table-compiler", [input, output])
            #expect(result.status == 0, "\(result.stderr)")
            let source = try String(contentsOfFile: output, encoding: .utf8)
            #expect(source.contains("enum AcmeDevicesMatchTable {"))
            #expect(source.contains("PCIMatchRule(vendorID: 0x1234, deviceID: 0x1,"))
            #expect(source.contains("driver: \"acme_vfio_pci\")"))
        }
    }
}
