import Foundation
import MigrationStream
import Testing

@Suite struct HeaderTests {
    static func fixture(_ name: String) throws -> [UInt8] {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
        return [UInt8](try Data(contentsOf: url))
    }

    @Test func qemuStreamOpensWithHeaderConfigurationAndRAMStart() throws {
        let bytes = try Self.fixture("qemu72-pc-i440fx-paused.mig")
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: [1]))
        try reader.readFileHeader()
        let config = try reader.readConfiguration()
        #expect(config == MachineConfiguration(machineType: "pc-i440fx-7.2"))
        #expect(reader.offset == 0x1a)
        let record = try reader.readRecord()
        #expect(record == .section(SectionHeader(kind: .start, sectionID: 2, idstr: "ram", instanceID: 0, versionID: 4)))
        #expect(reader.offset == 0x2b)
    }

    /// A section kind is named after, and valued as, the record that starts it (the reader
    /// and ``SectionKind/description`` rely on it).
    @Test func sectionKindsAreTheSectionRecordTypes() {
        let kinds: [SectionKind] = [.start, .part, .end, .full]
        #expect(kinds.map(\.recordType) == [.sectionStart, .sectionPart, .sectionEnd, .sectionFull])
        #expect(kinds.map(\.description) == ["start", "part", "end", "full"])
        let records: [RecordType] = [
            .eof, .sectionStart, .sectionPart, .sectionEnd, .sectionFull, .subsection, .vmDescription, .configuration, .command,
            .sectionFooter
        ]
        #expect(records.compactMap(SectionKind.init) == kinds)
    }

    @Test func writerReproducesTheHeaderBytes() throws {
        let bytes = try Self.fixture("qemu72-pc-i440fx-paused.mig")
        let sink = MemoryByteSink()
        let writer = StreamWriter(sink: sink)
        try writer.writeFileHeader()
        try writer.writeConfiguration(MachineConfiguration(machineType: "pc-i440fx-7.2"))
        try writer.writeSectionHeader(SectionHeader(kind: .start, sectionID: 2, idstr: "ram", instanceID: 0, versionID: 4))
        try writer.flush()
        #expect(sink.bytes == Array(bytes[0..<0x2b]))
    }

    @Test func version2IsRefusedByName() throws {
        let reader = StreamReader(source: MemoryByteSource([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 2]))
        #expect(throws: StreamError.obsoleteVersion(offset: 4)) { try reader.readFileHeader() }
    }

    @Test func returnPathMessagesRoundTrip() throws {
        let messages: [ReturnPathMessage] = [
            .shut(0), .pong(1), .switchoverAck, .requestPages(start: 4096, length: 8192),
            .loadReport(
                LoadReport(idstr: "0000:00:05.0/vfio", instanceID: 0, bytesLoaded: 1 << 20, loadMicros: 1500, fixedCostMicros: 200_000)),
            .loadReport(
                LoadReport(
                    idstr: "mlx5", instanceID: 2, bytesLoaded: 3 << 20, loadMicros: 310_000, fixedCostMicros: 0,
                    rateBytes: 1 << 20, rateMicros: 9_000)),
            .ackState(idstr: "dev", instanceID: 1, acknowledged: false),
            .preflightResult(accepted: false, message: "vendor id differs"),
            .loadBacklog(
                LoadBacklogReport(
                    idstr: "0000:00:05.0/vfio", instanceID: 0, bytes: 15 << 20, expectedMicros: 200_000,
                    loadedThrough: 80 << 20))
        ]
        let sink = MemoryByteSink()
        let writer = StreamWriter(sink: sink)
        for m in messages { try writer.writeReturnPathMessage(m) }
        try writer.flush()
        let reader = StreamReader(source: MemoryByteSource(sink.bytes, pieceSizes: [3, 1, 7]))
        for m in messages { #expect(try reader.readReturnPathMessage() == m) }
        #expect(try reader.isAtEnd())
    }

    /// LOAD_REPORT's payload: the three figures, then the two rate fields; a report without
    /// the rate fields rates the totals; anything else is refused.
    @Test func loadReportRateFields() throws {
        func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
        let head: [UInt8] = [3] + Array("dev".utf8) + [0, 0, 0, 1] + be64(4096) + be64(800) + be64(50)
        let full = try ReturnPathMessage.decode(type: ReturnPathMessage.loadReportType, payload: head + be64(2 << 20) + be64(10), offset: 0)
        guard case .loadReport(let r) = full else {
            Issue.record("\(full)")
            return
        }
        #expect(r.bytesLoaded == 4096 && r.loadMicros == 800 && r.fixedCostMicros == 50)
        #expect(r.rateBytes == 2 << 20 && r.rateMicros == 10)
        #expect(abs(r.microsPerByte - 10.0 / Double(2 << 20)) < 1e-15)
        #expect(ReturnPathMessage.loadReport(r).payload == head + be64(2 << 20) + be64(10))

        let short = try ReturnPathMessage.decode(type: ReturnPathMessage.loadReportType, payload: head, offset: 0)
        guard case .loadReport(let old) = short else {
            Issue.record("\(short)")
            return
        }
        #expect(old.rateBytes == 4096 && old.rateMicros == 800)

        #expect(throws: StreamError.self) {
            try ReturnPathMessage.decode(type: ReturnPathMessage.loadReportType, payload: head + be64(1024), offset: 0)
        }
        let noData = LoadReport(idstr: "d", instanceID: 0, bytesLoaded: 10, loadMicros: 5, fixedCostMicros: 0, rateBytes: 0, rateMicros: 0)
        #expect(noData.microsPerByte == 0)
        // One small section's overhead is no per-byte rate.
        let tiny = LoadReport(
            idstr: "d", instanceID: 0, bytesLoaded: 16 << 20, loadMicros: 400_000, fixedCostMicros: 0, rateBytes: 56, rateMicros: 19)
        #expect(tiny.microsPerByte == 0)
    }

    /// LOAD_BACKLOG: counted idstr, be32 instance, be64 bytes, be64 µs, be64 offset loaded
    /// through — exactly; any other length is refused.
    @Test func loadBacklogPayload() throws {
        func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) } }
        let bytes: [UInt8] = [3] + Array("dev".utf8) + [0, 0, 0, 2] + be64(1 << 20) + be64(150_000) + be64(4096)
        let message = try ReturnPathMessage.decode(type: ReturnPathMessage.loadBacklogType, payload: bytes, offset: 0)
        #expect(
            message
                == .loadBacklog(
                    LoadBacklogReport(idstr: "dev", instanceID: 2, bytes: 1 << 20, expectedMicros: 150_000, loadedThrough: 4096)))
        #expect(message.payload == bytes)
        #expect(ReturnPathMessage.name(of: 0x5304) == "LOAD_BACKLOG")
        for bad in [Array(bytes.dropLast()), bytes + [0]] {
            #expect(throws: StreamError.self) {
                try ReturnPathMessage.decode(type: ReturnPathMessage.loadBacklogType, payload: bad, offset: 0)
            }
        }
        #expect(SwitchoverFeatures.loadBacklog.rawValue == 1)
    }
}
