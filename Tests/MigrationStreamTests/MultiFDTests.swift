import MigrationStream
import Testing

@Suite struct MultiFDTests {
    static let uuid: [UInt8] = Array(0x10...0x1F)

    @Test func channelHeaderIsSixtyFourQEMUBytes() throws {
        let bytes = try MultiFDInit(uuid: Self.uuid, channelID: 3).encoded()
        #expect(bytes == [0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1] + Self.uuid + [3] + [UInt8](repeating: 0, count: 39))
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: [1]))
        #expect(try reader.readMultiFDInit() == MultiFDInit(uuid: Self.uuid, channelID: 3))
    }

    @Test func channelHeaderWithAnotherMagicOrVersionIsRefused() throws {
        var bytes = try MultiFDInit(uuid: Self.uuid, channelID: 0).encoded()
        bytes[7] = 2
        #expect(throws: StreamError.invalidField(offset: 4, field: "multifd version", reason: "2, expected 1")) {
            try MultiFDInit.decode(bytes)
        }
        bytes[0] = 0x51
        #expect(throws: StreamError.self) { try MultiFDInit.decode(bytes, offset: 100) }
        #expect((try? MultiFDInit.decode(bytes, offset: 100)) == nil)
        #expect(throws: StreamError.invalidField(offset: 8, field: "multifd channel uuid", reason: "3 bytes, expected 16")) {
            try MultiFDInit(uuid: [1, 2, 3], channelID: 0).encoded()
        }
    }

    @Test func deviceStatePacketHeaderIs276QEMUBytes() throws {
        let header = MultiFDDeviceStatePacketHeader(idstr: "0000:00:05.0/vfio", instanceID: 0, nextPacketSize: 0x0010_000C)
        let bytes = try header.encoded()
        #expect(bytes.count == 276)
        #expect(Array(bytes[0..<12]) == [0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0, 0, 0, 0x40])
        #expect(Array(bytes[12..<29]) == Array("0000:00:05.0/vfio".utf8))
        #expect(bytes[29..<268].allSatisfy { $0 == 0 })
        #expect(Array(bytes[268..<276]) == [0, 0, 0, 0, 0x00, 0x10, 0x00, 0x0C])
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: [5]))
        #expect(try reader.readMultiFDDeviceStatePacketHeader() == header)
    }

    @Test func deviceStatePacketHeaderWithoutNULIsRefused() throws {
        var bytes = try MultiFDDeviceStatePacketHeader(idstr: "dev", instanceID: 0, nextPacketSize: 1).encoded()
        for i in 12..<268 { bytes[i] = 0x41 }
        #expect(throws: StreamError.invalidField(offset: 1000 + 267, field: "multifd packet idstr", reason: "not NUL-terminated")) {
            try MultiFDDeviceStatePacketHeader.decode(bytes, offset: 1000)
        }
        bytes[267] = 0  // a 255-byte idstr is the longest that fits
        #expect(try MultiFDDeviceStatePacketHeader.decode(bytes).idstr.utf8.count == 255)
        for i in 12..<268 { bytes[i] = 0 }
        #expect(throws: StreamError.invalidField(offset: 12, field: "multifd packet idstr", reason: "empty")) {
            try MultiFDDeviceStatePacketHeader.decode(bytes)
        }
    }

    @Test func deviceStatePacketOverTheBoundIsRefusedBeforeAllocation() throws {
        let bytes = try MultiFDDeviceStatePacketHeader(idstr: "dev", instanceID: 0, nextPacketSize: 0xFFFF_FFFF).encoded()
        #expect(throws: StreamError.lengthTooLarge(offset: 272, field: "multifd device-state packet", length: 0xFFFF_FFFF, limit: 1 << 20))
        {
            try MultiFDDeviceStatePacketHeader.decode(bytes, maxPacketSize: 1 << 20)
        }
    }

    @Test func deviceStatePacketWithOtherFlagsIsRefused() throws {
        var bytes = try MultiFDDeviceStatePacketHeader(idstr: "dev", instanceID: 0, nextPacketSize: 1).encoded()
        bytes[11] = 0x41
        #expect(
            throws: StreamError.invalidField(
                offset: 8, field: "multifd packet flags", reason: "0x41, expected 0x40 (device state, no compression)")
        ) {
            try MultiFDDeviceStatePacketHeader.decode(bytes)
        }
    }

    @Test func truncatedPacketHeaderIsATypedError() throws {
        let bytes = Array(try MultiFDDeviceStatePacketHeader(idstr: "dev", instanceID: 0, nextPacketSize: 1).encoded()[0..<100])
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: [7]))
        #expect(throws: StreamError.truncated(offset: 100, expected: "a multifd device-state packet header (176 more bytes)")) {
            try reader.readMultiFDDeviceStatePacketHeader()
        }
    }

    @Test func idstrThatDoesNotFitIsRefusedOnEncode() {
        #expect(throws: StreamError.self) {
            try MultiFDDeviceStatePacketHeader(idstr: String(repeating: "a", count: 256), instanceID: 0, nextPacketSize: 0).encoded()
        }
        #expect(throws: StreamError.self) {
            try MultiFDDeviceStatePacketHeader(idstr: "a\u{0}b", instanceID: 0, nextPacketSize: 0).encoded()
        }
    }

    @Test func vfioDeviceStatePayloadHeaderRoundTrips() throws {
        let last = VFIODeviceStatePacketHeader(index: 7, flags: VFIODeviceStatePacketHeader.flagConfigState)
        #expect(last.encoded() == [0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1])
        #expect(try VFIODeviceStatePacketHeader.decode(last.encoded() + [0xAA]) == last)
        #expect(last.isConfigState)
        #expect(throws: StreamError.invalidField(offset: 0, field: "VFIO device-state packet version", reason: "1, expected 0")) {
            try VFIODeviceStatePacketHeader.decode([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
        }
        #expect(
            throws: StreamError.invalidField(offset: 4, field: "VFIO device-state packet idx", reason: "0xffffffff is not a valid index")
        ) {
            try VFIODeviceStatePacketHeader.decode([0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0])
        }
        #expect(throws: StreamError.truncated(offset: 3, expected: "a 12-byte VFIO device-state packet header")) {
            try VFIODeviceStatePacketHeader.decode([0, 0, 0])
        }
    }
}

@Suite struct ReturnPathBoundsTests {
    func read(_ bytes: [UInt8]) throws -> ReturnPathMessage {
        try StreamReader(source: MemoryByteSource(bytes, pieceSizes: [1])).readReturnPathMessage()
    }

    @Test func oversizedReturnPathMessageIsRefusedBeforeItsPayloadIsRead() {
        #expect(throws: StreamError.lengthTooLarge(offset: 2, field: "return-path payload", length: 513, limit: 512)) {
            try read([0x53, 0x03, 0x02, 0x01])
        }
    }

    @Test func returnPathTypeZeroIsRefused() {
        #expect(throws: StreamError.badReturnPathMessage(offset: 0, type: 0, reason: "type 0 is never valid")) {
            try read([0, 0, 0, 0])
        }
    }

    @Test func fixedLengthReturnPathMessageWithAnotherLengthIsRefused() {
        #expect(throws: StreamError.badReturnPathMessage(offset: 0, type: 2, reason: "PONG has length 2, expected 4")) {
            try read([0, 2, 0, 2, 0, 1])
        }
        #expect(throws: StreamError.badReturnPathMessage(offset: 0, type: 7, reason: "SWITCHOVER_ACK has length 1, expected 0")) {
            try read([0, 7, 0, 1, 0])
        }
    }

    @Test func unknownReturnPathTypeIsRefused() {
        #expect(throws: StreamError.badReturnPathMessage(offset: 0, type: 99, reason: "unknown message type")) {
            try read([0, 99, 0, 0])
        }
    }

    @Test func everyQEMUReturnPathMessageHasItsWireBytes() throws {
        let cases: [(ReturnPathMessage, [UInt8])] = [
            (.shut(1), [0, 1, 0, 4, 0, 0, 0, 1]),
            (.pong(0x42), [0, 2, 0, 4, 0, 0, 0, 0x42]),
            (
                .requestPagesID(start: 0x1000, length: 0x2000, block: "pc.ram"),
                [0, 3, 0, 19, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 6] + Array("pc.ram".utf8)
            ),
            (.requestPages(start: 0x1000, length: 0x2000), [0, 4, 0, 12, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x20, 0]),
            (.receivedBitmap(block: "pc.ram"), [0, 5, 0, 7, 6] + Array("pc.ram".utf8)),
            (.resumeAck(1), [0, 6, 0, 4, 0, 0, 0, 1]),
            (.switchoverAck, [0, 7, 0, 0])
        ]
        for (message, wire) in cases {
            let sink = MemoryByteSink()
            let writer = StreamWriter(sink: sink)
            try writer.writeReturnPathMessage(message)
            try writer.flush()
            #expect(sink.bytes == wire)
            #expect(try read(wire) == message)
        }
    }
}

@Suite struct CommandTests {
    @Test func everyCommandRoundTripsThroughTheWalker() throws {
        let commands: [MigrationCommand] = [
            .openReturnPath, .ping(1), .postcopyAdvise([]), .postcopyAdvise([UInt8](repeating: 1, count: 16)), .postcopyListen,
            .postcopyRun, .postcopyRAMDiscard([0, 6] + Array("pc.ram".utf8) + [0]), .enableCOLO, .postcopyResume,
            .recvBitmap("pc.ram"), .switchoverStart, .switchoverHello(version: 1, features: 3), .preflight(Array("{}".utf8)),
            .packaged(length: 3)
        ]
        let bytes = stream { w in
            for c in commands { try w.writeCommand(c) }
            try w.writeBytes([1, 2, 3])  // the packaged bytes
            try w.writeEOF()
        }
        let sink = MemoryByteSink()
        let result = try walk(bytes, pieceSizes: [2], mirror: sink)
        #expect(result.records.compactMap(\.command) == commands)
        #expect(result.records.last?.bodyLength == nil)
        #expect(result.records.dropLast().last?.bodyLength == 4 + 3)
        #expect(sink.bytes == bytes)
    }

    @Test func commandsHaveQEMUWireBytes() throws {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try w.writeCommand(.openReturnPath)
        try w.writeCommand(.ping(1))
        try w.writeCommand(.switchoverStart)
        try w.writeCommand(.switchoverHello(version: 1, features: 2))
        try w.flush()
        #expect(sink.bytes == [8, 0, 1, 0, 0, 8, 0, 2, 0, 4, 0, 0, 0, 1, 8, 0, 11, 0, 0, 8, 0x53, 0x01, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2])
    }
}
