import Foundation
import MigrationStream
import Testing

/// `switchover incoming --listen file:FILE --devices-only`: a file another VMM wrote, with sections
/// nobody here has a handler for. The foreign part is QEMU 7.2's own file (ram and 30-odd device
/// vmstates, skipped by the sizes its VMDESCRIPTION gives); the VFIO sections of an mtty device are
/// ours, spliced in before its EOF under section ids QEMU's file does not use.
@Suite struct ForeignFileIncomingTests {
    static let device = "mtty:name=0000:00:04.0"
    static let idstr = "0000:00:04.0/vfio"
    static let machineType = "pc-q35-7.2"

    static func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "switchover-foreign-\(UUID().uuidString.prefix(8))-\(name)"
    }

    /// Our source's VFIO sections for the mtty device, renumbered to `firstID` and up, and the
    /// digest of the device stream it sent.
    static func ourVFIOSections(firstID: UInt32) throws -> (records: [UInt8], hash: String) {
        let path = temporaryPath("ours.mig")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try BuiltProduct.run(
            "switchover",
            ["migrate", "--to", "file:\(path)", "--memory", "1MiB", "--machine-type", machineType, "--device", device, "--json"])
        try #require(run.status == 0, "migrate: \(run.stderr)")
        let sent = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let devices = try #require((sent["digests"] as? [String: Any])?["devices"] as? [[String: Any]])
        let hash = try #require(devices.first?["hash"] as? String)

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let walker = try StreamWalker(source: MemoryByteSource(bytes))
        try walker.readPreamble()
        var out: [UInt8] = []
        var records = 0
        while let record = try walker.next(), record.kind != .eof {
            let end = walker.reader.offset
            guard let id = record.sectionID, record.idstr == idstr else { continue }
            var piece = Array(bytes[record.offset..<end])
            // The section id after the type byte, and in the footer (0x7e, id) that ends the record.
            let renumbered = firstID + id
            let be = [UInt8(renumbered >> 24), UInt8(renumbered >> 16 & 0xff), UInt8(renumbered >> 8 & 0xff), UInt8(renumbered & 0xff)]
            piece.replaceSubrange(1..<5, with: be)
            try #require(piece[piece.count - 5] == 0x7e, "a section footer")
            piece.replaceSubrange((piece.count - 4)..<piece.count, with: be)
            out += piece
            records += 1
        }
        try #require(records >= 3, "START, END and FULL of \(idstr)")
        return (out, hash)
    }

    /// QEMU's fixture with our VFIO sections before its EOF; the VMDESCRIPTION trailer stays as QEMU wrote it.
    static func foreignFile() throws -> (path: String, hash: String) {
        let fixture = InspectCommandTests.fixtures.appendingPathComponent("qemu72-q35-booted.mig").path
        let qemu = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixture)))
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: fixture))
        let (vfio, hash) = try ourVFIOSections(firstID: 0x1000)
        let path = temporaryPath("qemu-with-vfio.mig")
        let spliced = Array(qemu[..<trailer.eofOffset]) + vfio + Array(qemu[trailer.eofOffset...])
        try Data(spliced).write(to: URL(fileURLWithPath: path))
        return (path, hash)
    }

    static func incoming(_ path: String, _ extra: [String] = []) throws -> BuiltProduct.Result {
        try BuiltProduct.run(
            "switchover",
            ["incoming", "--listen", "file:\(path)", "--memory", "1MiB", "--machine-type", machineType, "--device", device, "--json"]
                + extra)
    }

    @Test func loadsTheVFIOSectionsOfAQEMUFileAndSkipsTheRest() throws {
        let (path, hash) = try Self.foreignFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try Self.incoming(path, ["--devices-only", "--no-progress"])
        try #require(run.status == 0, "incoming: \(run.stderr)")
        let received = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let devices = try #require((received["digests"] as? [String: Any])?["devices"] as? [[String: Any]])
        try #require(devices.count == 1)
        #expect(devices[0]["name"] as? String == "0000:00:04.0")
        #expect(devices[0]["hash"] as? String == hash, "the device loaded what our source sent")
        #expect(run.stderr.contains("loading \(Self.idstr); skipped "))
        #expect(run.stderr.contains("ram, timer, cpu_common, cpu"))
    }

    @Test func withoutDevicesOnlyQEMUsRAMIsLoadedAndRefused() throws {
        let (path, _) = try Self.foreignFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try Self.incoming(path, ["--no-progress"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("does not match this VM's layout"), "\(run.stderr)")
    }

    @Test func aFileWithoutVMDescriptionIsRefusedWithAMessage() throws {
        let (path, _) = try Self.foreignFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: path))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        try Data(bytes[...trailer.eofOffset]).write(to: URL(fileURLWithPath: path))
        let run = try Self.incoming(path, ["--devices-only", "--no-progress"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("no VMDESCRIPTION trailer"), "\(run.stderr)")
    }

    @Test func devicesOnlyNeedsAFile() throws {
        let run = try BuiltProduct.run("switchover", ["incoming", "--listen", "unix:/tmp/x.sock", "--devices-only"])
        #expect(run.status != 0)
        #expect(run.stderr.contains("--devices-only needs --listen file:FILE"), "\(run.stderr)")
    }
}
