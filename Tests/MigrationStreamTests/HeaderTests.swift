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
            .loadReport(LoadReport(idstr: "0000:00:05.0/vfio", instanceID: 0, bytesLoaded: 1 << 20, loadMicros: 1500, fixedCostMicros: 200_000)),
            .ackState(idstr: "dev", instanceID: 1, acknowledged: false),
            .preflightResult(accepted: false, message: "vendor id differs"),
        ]
        let sink = MemoryByteSink()
        let writer = StreamWriter(sink: sink)
        for m in messages { try writer.writeReturnPathMessage(m) }
        try writer.flush()
        let reader = StreamReader(source: MemoryByteSource(sink.bytes, pieceSizes: [3, 1, 7]))
        for m in messages { #expect(try reader.readReturnPathMessage() == m) }
        #expect(try reader.isAtEnd())
    }
}
