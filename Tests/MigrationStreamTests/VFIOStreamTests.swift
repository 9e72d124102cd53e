import Foundation
import MigrationStream
import Testing

/// A stream with a VFIO device's START/PART/END/FULL sections between the others: every
/// section after the VFIO ones must still be found (analyze-migration.py loses them).
@Suite struct VFIOStreamTests {
    static let idstr = Synthetic.vfio.binding.idstr

    static func expectedRecords(eofOffset: Int, describedFull: Bool) -> [String] {
        let full = describedFull ? "length from VMDESCRIPTION" : "end found by footer scan"
        return [
            "command OPEN_RETURN_PATH 0",
            "command PING 4",
            "start ram 2 v4 body 31 ram: total 8192 B, blocks pc.ram=8192",
            "start \(idstr) 60 v1 body 16 vfio: SETUP_STATE END_OF_STATE",
            "part ram 2 v4 body 4128 ram: pages pc.ram 1+1z",
            "part \(idstr) 60 v1 body 56 vfio: DATA(32) END_OF_STATE",
            "part \(idstr) 60 v1 body 8 vfio: INIT_DATA_SENT",
            "command SWITCHOVER_START 0",
            "end ram 2 v4 body 8 ram: EOS",
            "end \(idstr) 60 v1 body 124 vfio: DATA(100) END_OF_STATE",
            "full timer 0 v2 body 24 \(full)",
            "full \(idstr) 60 v1 body 40 vfio: CONFIG_STATE(24) END_OF_STATE",
            "full globalstate 40 v1 body 12 \(full)",
            "eof"
        ]
    }

    static func describe(_ r: InspectedRecord) -> String {
        switch r.kind {
        case .command: "command \(r.command?.name ?? "?") \(r.bodyLength ?? -1)"
        case .eof: "eof"
        case .vmdescription: "vmdescription \(r.bodyLength ?? -1)"
        default:
            "\(r.kind.rawValue) \(r.idstr ?? "?") \(r.sectionID ?? 0) v\(r.versionID ?? 0) body \(r.bodyLength ?? -1) \(r.body?.description ?? "")"
        }
    }

    @Test func everySectionAfterTheVFIOSectionsIsFound() throws {
        let (bytes, eof) = try Synthetic.stream()
        let trailer = VMDescriptionTrailer(eofOffset: eof, json: Array(Synthetic.description.utf8))
        let result = try walk(bytes, trailer: trailer)
        #expect(
            result.records.map(Self.describe) == Self.expectedRecords(eofOffset: eof, describedFull: true) + [
                "vmdescription \(trailer.json.count)"
            ])
        #expect(result.records.first { $0.kind == .eof }?.offset == eof)
    }

    @Test func vfioConfigStateEndIsFoundPastADecoyFooter() throws {
        let (bytes, eof) = try Synthetic.stream(withTrailer: false)
        let result = try walk(bytes)
        #expect(result.records.map(Self.describe) == Self.expectedRecords(eofOffset: eof, describedFull: false))
        let full = try #require(result.records.first { $0.kind == .full && $0.idstr == Self.idstr })
        #expect(full.body == .vfio(VFIOBodySummary(items: [.config(24), .tag(.endOfState)])))
    }

    @Test func sameRecordsComeOutWhateverTheInputSplitting() throws {
        let (bytes, eof) = try Synthetic.stream()
        let trailer = VMDescriptionTrailer(eofOffset: eof, json: Array(Synthetic.description.utf8))
        let whole = try walk(bytes, trailer: trailer)
        for pieces in [[1], [2, 3, 5, 7], randomPieceSizes(seed: 3, max: 64), randomPieceSizes(seed: 5, max: 5000), [bytes.count]] {
            #expect(try walk(bytes, pieceSizes: pieces, trailer: trailer) == whole)
            #expect(try walk(bytes, pieceSizes: pieces).records.count == whole.records.count)
        }
    }

    @Test func rewriteReproducesTheSyntheticStream() throws {
        let (bytes, eof) = try Synthetic.stream()
        for trailer in [nil, VMDescriptionTrailer(eofOffset: eof, json: Array(Synthetic.description.utf8))] {
            let sink = MemoryByteSink()
            _ = try walk(bytes, pieceSizes: [3, 1000, 1], trailer: trailer, mirror: sink)
            #expect(sink.bytes == bytes)
        }
    }

    @Test func tagHelpersWriteQEMUBytes() throws {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try w.writeVFIOTag(.setupState)
        try w.writeVFIODataChunkHeader(size: 0x0010_0000)
        try w.writeVFIOTag(.initDataSent)
        try w.flush()
        #expect(
            sink.bytes == [
                0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0x10, 0x00, 0x03,
                0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0x10, 0x00, 0x04, 0, 0, 0, 0, 0, 0x10, 0, 0,
                0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0x10, 0x00, 0x05
            ])
        // QEMU's six, then Switchover's own REINIT (sent only to a Switchover peer).
        #expect(VFIOSectionTag.allCases.map(\.rawValue) == (1...6).map { 0xFFFF_FFFF_EF10_0000 + $0 } + [0xFFFF_FFFF_EF10_5301])
        let reader = StreamReader(source: MemoryByteSource(sink.bytes))
        #expect(try reader.readVFIOTag() == .setupState)
        #expect(try reader.readVFIOTag() == .dataState)
    }

    @Test func inspectionJSONListsEveryRecordWithOnlyTheKeysThatApply() throws {
        let (bytes, eof) = try Synthetic.stream()
        let trailer = VMDescriptionTrailer(eofOffset: eof, json: Array(Synthetic.description.utf8))
        let result = try walk(bytes, trailer: trailer)
        let json = StreamInspection(configuration: result.configuration, records: result.records).json()
        #expect(
            json.hasPrefix(
                #"{"version": 3, "machine": "pc-i440fx-7.2", "records": [{"offset": 26, "kind": "command", "bodyLength": 0, "command": 1}, "#
            ))
        #expect(
            json.contains(
                #"{"offset": 93, "kind": "start", "sectionID": 60, "idstr": "0000:00:05.0/vfio", "instanceID": 0, "versionID": 1, "bodyLength": 16}"#
            ))
        #expect(json.contains(#"{"offset": \#(eof), "kind": "eof"}"#))
        #expect(json.hasSuffix(#"{"offset": \#(eof + 1), "kind": "vmdescription", "bodyLength": \#(trailer.json.count)}]}"#))
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect((object?["records"] as? [Any])?.count == result.records.count)
    }

    /// A body owner of the caller's takes precedence over the built-in ones.
    final class CountingParser: SectionBodyParser {
        func owns(_ binding: SectionBinding) -> Bool { binding.idstr == "globalstate" }
        func parseBody(_ body: SectionBodyReader) throws -> SectionBodySummary {
            let length = try body.readBE32("the runstate length")
            _ = try body.readBytes(Int(length), limit: 64, "the runstate")
            return .other("runstate of \(length) bytes")
        }
    }

    @Test func aSectionsOwnerReadsItsBody() throws {
        let (bytes, eof) = try Synthetic.stream()
        for trailer in [nil, VMDescriptionTrailer(eofOffset: eof, json: Array(Synthetic.description.utf8))] {
            let result = try walk(bytes, trailer: trailer, parsers: [CountingParser()])
            let global = try #require(result.records.first { $0.idstr == "globalstate" })
            #expect(global.body == .other("runstate of 8 bytes"))
            #expect(global.bodyLength == 12)
        }
    }

    @Test func unknownLiveSectionsAreFoundByTheirFooters() throws {
        let bitmap = SectionHeader(kind: .start, sectionID: 5, idstr: "dirty-bitmap", instanceID: 0, versionID: 1)
        let bytes = stream { w in
            for kind in [SectionKind.start, .part, .end] {
                var h = bitmap
                h.kind = kind
                try Synthetic.section(w, h) {
                    // Decoys: a footer for id 5 followed by a byte that starts no record, and
                    // one followed by a PART for an id nothing bound.
                    try w.writeBytes([0x7E, 0, 0, 0, 5, 0x42, 0x7E, 0, 0, 0, 5, 0x02, 0, 0, 0, 9, 0x33])
                }
            }
            try w.writeCommand(.switchoverStart)
            try w.writeEOF()
        }
        let result = try walk(bytes, pieceSizes: [1])
        #expect(result.records.map(\.kind) == [.start, .part, .end, .command, .eof])
        #expect(result.records.prefix(3).allSatisfy { $0.bodyLength == 17 && $0.body == .scanned && $0.idstr == "dirty-bitmap" })
    }
}
