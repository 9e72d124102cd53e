import MLX5Handler
import Testing

@Suite struct MLX5RecordParserTests {
    /// STOP_COPY_SIZE (optional, 8 bytes) · FW_DATA 40 bytes · unknown optional tag 7 (5 bytes) · FW_DATA 0 bytes.
    static let stream: [UInt8] = {
        var s = MLX5RecordHeader(payloadSize: 8, flags: 1, tag: .stopCopySize).bytes
        s += [0x00, 0x00, 0x40, 0x00, 0, 0, 0, 0]  // 0x400000 little-endian
        s += MLX5RecordHeader(payloadSize: 40, flags: 0, tag: .firmwareData).bytes
        s += (0..<40).map { UInt8($0) }
        s += MLX5RecordHeader(payloadSize: 5, flags: 1, tag: MLX5RecordTag(rawValue: 7)).bytes
        s += [9, 9, 9, 9, 9]
        s += MLX5RecordHeader(payloadSize: 0, flags: 0, tag: .firmwareData).bytes
        return s
    }()

    static func parse(_ bytes: [UInt8], pieces: Int) throws -> (MLX5RecordParser, [MLX5RecordParser.Event]) {
        var parser = MLX5RecordParser()
        var events: [MLX5RecordParser.Event] = []
        var i = 0
        while i < bytes.count {
            let n = min(pieces, bytes.count - i)
            try bytes[i..<i + n].withUnsafeBytes { events += try parser.consume($0) }
            i += n
        }
        return (parser, events)
    }

    @Test func headerBytesAreLittleEndian() {
        let h = MLX5RecordHeader(payloadSize: 0x0102, flags: 1, tag: .stopCopySize)
        #expect(h.bytes == [0x02, 0x01, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])
        #expect(MLX5RecordHeader(bytes: h.bytes) == h)
    }

    @Test(arguments: [1, 3, 16, 17, 1000])
    func sameEventsWhateverTheSplitting(pieces: Int) throws {
        let (whole, expected) = try Self.parse(Self.stream, pieces: Self.stream.count)
        let (parser, events) = try Self.parse(Self.stream, pieces: pieces)
        #expect(events == expected)
        #expect(parser.announcedStopCopySize == 0x40_0000)
        #expect(parser.recordCount == [0: 2, 1: 1, 7: 1])
        #expect(parser.isAtRecordBoundary)
        #expect(parser.offset == UInt64(Self.stream.count))
        #expect(whole.offset == parser.offset)
        #expect(events.contains(.stopCopySize(0x40_0000)))
    }

    @Test func oversizedRecordIsRefusedBeforeItsPayload() {
        var parser = MLX5RecordParser(recordLimit: 1 << 20)
        let header = MLX5RecordHeader(payloadSize: (1 << 20) + 1, flags: 0, tag: .firmwareData).bytes
        #expect(throws: MLX5RecordError.recordTooLarge(offset: 0, size: (1 << 20) + 1, limit: 1 << 20)) {
            try header.withUnsafeBytes { _ = try parser.consume($0) }
        }
    }

    @Test func unknownMandatoryTagIsRefused() {
        var parser = MLX5RecordParser()
        let header = MLX5RecordHeader(payloadSize: 4, flags: 0, tag: MLX5RecordTag(rawValue: 9)).bytes
        #expect(throws: MLX5RecordError.unknownMandatoryTag(offset: 0, tag: 9)) {
            try header.withUnsafeBytes { _ = try parser.consume($0) }
        }
    }

    @Test func stopCopySizeRecordMustCarryEightBytes() {
        var parser = MLX5RecordParser()
        let header = MLX5RecordHeader(payloadSize: 4, flags: 1, tag: .stopCopySize).bytes
        #expect(throws: MLX5RecordError.badStopCopySizeRecord(offset: 0, size: 4)) {
            try header.withUnsafeBytes { _ = try parser.consume($0) }
        }
    }

    @Test func aStreamCutInsideARecordIsNotAtABoundary() throws {
        let (parser, _) = try Self.parse(Array(Self.stream.prefix(30)), pieces: 7)
        #expect(!parser.isAtRecordBoundary)
    }
}
