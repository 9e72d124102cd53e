import Foundation
import MigrationStream
import Testing

/// The two real QEMU 7.2 streams, walked end to end.
@Suite struct FixtureStreamTests {
    @Test(arguments: Fixture.names)
    func qemuStreamHasExactlyTheSectionsItsVMDescriptionImplies(name: String) throws {
        let path = try Fixture.path(name)
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: path))
        let description = try VMDescription(json: trailer.json)
        let result = try walk(try Fixture.bytes(name), trailer: trailer)

        // ram is the only live section: START, PART, END with id 2, version 4.
        let live = result.records.filter { $0.kind == .start || $0.kind == .part || $0.kind == .end }
        #expect(live.map(\.kind) == [.start, .part, .end])
        #expect(live.allSatisfy { $0.idstr == "ram" && $0.sectionID == 2 && $0.versionID == 4 })
        // Every FULL section, in order, is a described device with its version and length.
        let full = result.records.filter { $0.kind == .full }
        #expect(full.map { "\($0.idstr ?? "")#\($0.instanceID ?? 99)" } == description.devices.map { "\($0.name)#\($0.instanceID)" })
        #expect(full.map(\.versionID) == description.devices.map(\.versionID))
        #expect(full.map(\.bodyLength) == description.devices.map(\.bodyLength))
        #expect(full.allSatisfy { $0.body == .described })
        // Then EOF at the trailer's offset and the trailer, which ends the file.
        #expect(result.records.suffix(2).map(\.kind) == [.eof, .vmdescription])
        #expect(result.records.last?.bodyLength == trailer.json.count)
        #expect(result.records.dropLast().last?.offset == trailer.eofOffset)
    }

    @Test func pausedI440FXStreamMatchesTheReferenceLayout() throws {
        let result = try walk(try Fixture.bytes("qemu72-pc-i440fx-paused.mig"))
        #expect(result.configuration == MachineConfiguration(machineType: "pc-i440fx-7.2"))
        let offsets = result.records.prefix(4).map(\.offset)
        #expect(offsets == [0x1A, 0xC4, 0x3A58B, 0x3A59D])
        #expect(result.records.count == 35)
        #expect(result.records.last?.offset == 0x3D7D7)
        guard case .ram(let start) = result.records[0].body else {
            Issue.record("ram START has no ram summary")
            return
        }
        #expect(start.totalBytes == 17_309_696)
        #expect(
            start.blocks.map(\.name) == [
                "pc.ram", "/rom@etc/acpi/tables", "pc.bios", "pc.rom", "/rom@etc/table-loader", "/rom@etc/acpi/rsdp"
            ])
        #expect(start.blocks.map(\.usedLength) == [16 << 20, 128 << 10, 256 << 10, 128 << 10, 4096, 4096])
        guard case .ram(let part) = result.records[1].body else {
            Issue.record("ram PART has no ram summary")
            return
        }
        #expect(part.pageCounts.first == RAMPageCount(block: "pc.ram", pages: 0, zeroPages: 4096))
        #expect(result.records[2].body == .ram(RAMBodySummary()))
    }

    @Test(arguments: Fixture.names)
    func footerScanFindsTheSameSectionsAsTheVMDescription(name: String) throws {
        let bytes = try Fixture.bytes(name)
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: try Fixture.path(name)))
        let described = try walk(bytes, trailer: trailer)
        // Cut the trailer off: every FULL body's end must now be found by scanning.
        let scanned = try walk(Array(bytes[...trailer.eofOffset]))
        #expect(scanned.records.filter { $0.kind == .full }.allSatisfy { $0.body == .scanned })
        func shape(_ r: InspectedRecord) -> [Int?] { [r.offset, r.bodyLength, r.sectionID.map(Int.init)] }
        #expect(scanned.records.map(shape) == described.records.dropLast().map(shape))
    }

    @Test(arguments: Fixture.names)
    func rewriteReproducesTheFileByteForByte(name: String) throws {
        let bytes = try Fixture.bytes(name)
        let trailer = try VMDescriptionTrailer.locate(inFileAt: try Fixture.path(name))
        let sink = MemoryByteSink()
        _ = try walk(bytes, pieceSizes: [4093, 17, 65536], trailer: trailer, mirror: sink)
        #expect(sink.bytes.count == bytes.count)
        #expect(sink.bytes == bytes)
    }

    @Test(arguments: Fixture.names)
    func inspectRewritesAFileToAnIdenticalFile(name: String) throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("rewrite-\(UUID().uuidString).mig").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let inspection = try StreamInspection.inspect(fileAt: try Fixture.path(name), rewritingTo: out)
        #expect(inspection.records.last?.kind == .vmdescription)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(try Fixture.bytes(name)))
    }

    @Test(arguments: Fixture.names)
    func sameRecordsComeOutWhateverTheInputSplitting(name: String) throws {
        let bytes = try Fixture.bytes(name)
        let trailer = try VMDescriptionTrailer.locate(inFileAt: try Fixture.path(name))
        let whole = try walk(bytes, trailer: trailer)
        #expect(try walk(bytes, pieceSizes: [1], trailer: trailer) == whole)
        #expect(try walk(bytes, pieceSizes: randomPieceSizes(seed: 7), trailer: trailer) == whole)
        #expect(try walk(bytes, pieceSizes: [bytes.count], trailer: trailer) == whole)
        // Scanning for footers must not depend on the splitting either.
        let eof = try #require(trailer).eofOffset
        let cut = Array(bytes[...eof])
        let scanned = try walk(cut)
        #expect(try walk(cut, pieceSizes: [1]) == scanned)
        #expect(try walk(cut, pieceSizes: randomPieceSizes(seed: 11, max: 300)) == scanned)
    }

    @Test func trailerIsFoundFromTheEndOfTheFile() throws {
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: try Fixture.path("qemu72-pc-i440fx-paused.mig")))
        #expect(trailer.eofOffset == 0x3D7D6)
        #expect(trailer.json.count == 98_649)
        #expect(trailer.json.first == UInt8(ascii: "{"))
        let description = try VMDescription(json: trailer.json)
        #expect(description.pageSize == 4096)
        #expect(description.devices.count == 30)
        #expect(description.devices.first == VMDescription.Device(name: "timer", instanceID: 0, versionID: 2, bodyLength: 24))
    }

    @Test func fileWithoutTrailerHasNoTrailer() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("notrailer-\(UUID().uuidString).mig").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bytes = try Fixture.bytes("qemu72-pc-i440fx-paused.mig")
        try Data(bytes[...0x3D7D6]).write(to: URL(fileURLWithPath: path))
        #expect(try VMDescriptionTrailer.locate(inFileAt: path) == nil)
    }
}
