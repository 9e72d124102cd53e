import Foundation
import Testing

@testable import MigrationStream

/// SectionSelection over QEMU 7.2's q35 file: what it keeps and skips, and what a hostile
/// VMDESCRIPTION trailer does to it (a typed error or the same plan, never a trap or a huge
/// allocation).
@Suite struct SectionSelectionTests {
    static let fixture = "qemu72-q35-booted.mig"

    static func fixtureBytes() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: try Fixture.path(fixture))))
    }

    /// The fixture with its trailer's JSON replaced (the be32 length follows it).
    static func withTrailer(_ rewrite: (String) -> String) throws -> String {
        let path = try Fixture.path(fixture)
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: path))
        let bytes = try fixtureBytes()
        let json = Array(rewrite(String(decoding: trailer.json, as: UTF8.self)).utf8)
        let count = UInt32(json.count)
        let out =
            Array(bytes[...(trailer.eofOffset + 1)])
            + [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + json
        let target = NSTemporaryDirectory() + "selection-\(UUID().uuidString.prefix(8)).mig"
        try Data(out).write(to: URL(fileURLWithPath: target))
        return target
    }

    static func keepRAM(_ idstr: String, _ instance: UInt32) -> Bool { idstr == "ram" }

    @Test func keepsTheChosenSectionsAndEveryRecordAfterEOF() throws {
        let path = try Fixture.path(Self.fixture)
        let selection = try SectionSelection(fileAt: path, keep: Self.keepRAM)
        let bytes = try Self.fixtureBytes()
        #expect(selection.kept == ["ram"])
        #expect(selection.skipped.first?.idstr == "timer")
        #expect(selection.skipped.count > 20)
        #expect(selection.skipped.allSatisfy { $0.records == 1 && $0.bytes > 0 })
        // Header, configuration and ram's START/PART/END are one range; EOF and the trailer end the file.
        try #require(selection.ranges.count == 2)
        #expect(selection.ranges[0].lowerBound == 0)
        #expect(selection.ranges[1].upperBound == bytes.count)
        let skipped = selection.skipped.reduce(0) { $0 + $1.bytes }
        #expect(selection.keptBytes + skipped == bytes.count, "every byte is kept or skipped")

        // The kept bytes walk as a stream of their own: ram, then EOF and the trailer.
        var cut: [UInt8] = []
        for range in selection.ranges { cut += bytes[range] }
        let walker = try StreamWalker(source: MemoryByteSource(cut))
        var idstrs: [String] = []
        while let record = try walker.next() { if let idstr = record.idstr { idstrs.append(idstr) } }
        #expect(Set(idstrs) == ["ram"])
    }

    @Test func keepingNothingLeavesThePreambleAndEOF() throws {
        let selection = try SectionSelection(fileAt: try Fixture.path(Self.fixture)) { _, _ in false }
        #expect(selection.kept.isEmpty)
        #expect(selection.skipped.first?.idstr == "ram")
        #expect(selection.ranges.count == 2)
    }

    /// Sizes that overflow, that are off by one, negative, or absurdly nested: the description
    /// cannot give a length that lands on a footer, so the walker finds each body's end by its
    /// footer and the plan is the honest one.
    static func hostile(_ name: String, _ json: String) -> String {
        let size = "\"size\": "
        switch name {
        case "huge sizes": return json.replacingOccurrences(of: size, with: size + "4611686018427387904")
        case "huge array lengths": return json.replacingOccurrences(of: size, with: "\"array_len\": 9223372036854775807, " + size)
        case "sizes off by one": return json.replacingOccurrences(of: size, with: size + "1")
        case "negative sizes": return json.replacingOccurrences(of: size, with: size + "-")
        case "sizes beyond Int": return json.replacingOccurrences(of: size, with: size + "99999999999999999999999")
        default:
            let deep = String(repeating: "{\"vmsd_name\": \"x\", \"subsections\": [", count: 200) + String(repeating: "]}", count: 200)
            return json.replacingOccurrences(of: "\"fields\": [", with: "\"subsections\": [\(deep)], \"fields\": [")
        }
    }

    @Test(arguments: ["huge sizes", "huge array lengths", "sizes off by one", "negative sizes", "sizes beyond Int", "deep subsections"])
    func aHostileDescriptionGivesTheHonestPlan(name: String) throws {
        let honest = try SectionSelection(fileAt: try Fixture.path(Self.fixture), keep: Self.keepRAM)
        let path = try Self.withTrailer { Self.hostile(name, $0) }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: path), "\(name): the trailer is still found")
        #expect(trailer.json.count > 100)
        do {
            let selection = try SectionSelection(fileAt: path, keep: Self.keepRAM)
            #expect(selection.kept == honest.kept, "\(name)")
            #expect(selection.skipped.map(\.idstr) == honest.skipped.map(\.idstr), "\(name)")
            #expect(selection.ranges.count == honest.ranges.count, "\(name)")
            #expect(selection.ranges.first == honest.ranges.first, "\(name)")
        } catch let error as StreamError {
            Issue.record("\(name): \(error)")
        }
    }

    @Test(arguments: [
        ("not JSON", "{\"page_size\": 4096, \"devices\": [", "not valid JSON"),
        ("a device without a name", "{\"page_size\": 4096, \"devices\": [{\"instance_id\": 0}]}", "without name"),
        (
            "an instance id beyond 32 bits", "{\"page_size\": 4096, \"devices\": [{\"name\": \"timer\", \"instance_id\": 4294967296}]}",
            "without name"
        )
    ])
    func aBrokenDescriptionIsATypedError(name: String, json: String, reason: String) throws {
        let path = try Self.withTrailer { _ in json }
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: StreamError.self, "\(name)") { try SectionSelection(fileAt: path, keep: Self.keepRAM) }
        do {
            _ = try SectionSelection(fileAt: path, keep: Self.keepRAM)
        } catch {
            #expect("\(error)".contains(reason), "\(name): \(error)")
        }
    }

    @Test func aFileWithoutTrailerIsRefused() throws {
        let bytes = try Self.fixtureBytes()
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: try Fixture.path(Self.fixture)))
        let path = NSTemporaryDirectory() + "selection-\(UUID().uuidString.prefix(8)).mig"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(bytes[...trailer.eofOffset]).write(to: URL(fileURLWithPath: path))
        do {
            _ = try SectionSelection(fileAt: path, keep: Self.keepRAM)
            Issue.record("a file without trailer was planned")
        } catch let error as StreamError {
            #expect("\(error)".contains("no VMDESCRIPTION trailer"))
        }
    }

    @Test func aTruncatedFileIsATypedError() throws {
        let bytes = try Self.fixtureBytes()
        let trailer = try #require(try VMDescriptionTrailer.locate(inFileAt: try Fixture.path(Self.fixture)))
        // The trailer kept, the last device sections cut away: the walk runs into the trailer's bytes.
        let cut = Array(bytes[..<(trailer.eofOffset - 200)]) + Array(bytes[trailer.eofOffset...])
        let path = NSTemporaryDirectory() + "selection-\(UUID().uuidString.prefix(8)).mig"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(cut).write(to: URL(fileURLWithPath: path))
        #expect(throws: StreamError.self) { try SectionSelection(fileAt: path, keep: Self.keepRAM) }
    }
}
