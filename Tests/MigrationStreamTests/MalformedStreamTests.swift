import MigrationStream
import Testing

/// One malformed stream and the typed error, with its offset, that it must produce.
struct MalformedCase: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    var error: String
    var offset: Int

    var testDescription: String { name }
}

/// Builds stream bytes with the writer.
func bytes(_ build: (StreamWriter) throws -> Void) -> [UInt8] {
    let sink = MemoryByteSink()
    let w = StreamWriter(sink: sink)
    try! build(w)
    try! w.flush()
    return sink.bytes
}

/// Header and a configuration for machine "pc": 15 bytes.
let preamble = bytes {
    try $0.writeFileHeader()
    try $0.writeConfiguration(MachineConfiguration(machineType: "pc"))
}
let ramStart = SectionHeader(kind: .start, sectionID: 2, idstr: "ram", instanceID: 0, versionID: 4)  // 17 bytes
let vfioStart = SectionHeader(kind: .start, sectionID: 60, idstr: "0000:00:05.0/vfio", instanceID: 0, versionID: 1)  // 31 bytes
let vfioFull = SectionHeader(kind: .full, sectionID: 60, idstr: "0000:00:05.0/vfio", instanceID: 0, versionID: 1)
let deviceFull = SectionHeader(kind: .full, sectionID: 7, idstr: "dev", instanceID: 0, versionID: 1)

/// The preamble, then what `build` writes.
func stream(_ build: (StreamWriter) throws -> Void) -> [UInt8] {
    preamble + bytes(build)
}

func ramBody(_ build: (StreamWriter) throws -> Void) -> [UInt8] {
    stream {
        try $0.writeSectionHeader(ramStart)
        try build($0)
    }
}

func vfioBody(_ header: SectionHeader = vfioStart, _ build: (StreamWriter) throws -> Void) -> [UInt8] {
    stream {
        try $0.writeSectionHeader(header)
        try build($0)
    }
}

func command(_ id: UInt16, length: UInt16, payload: [UInt8] = []) -> [UInt8] {
    stream {
        try $0.writeU8(0x08)
        try $0.writeBE16(id)
        try $0.writeBE16(length)
        try $0.writeBytes(payload)
    }
}

let malformedCases: [MalformedCase] = {
    let afterRAMHeader = 15 + 17  // 32
    let afterVFIOHeader = 15 + 31  // 46
    var cases: [MalformedCase] = [
        .init(name: "bad magic", bytes: [0x51, 0x45, 0x56, 0x4E, 0, 0, 0, 3], error: "badMagic", offset: 0),
        .init(name: "version 2", bytes: [0x51, 0x45, 0x56, 0x4D, 0, 0, 0, 2], error: "obsoleteVersion", offset: 4),
        .init(name: "version 4", bytes: [0x51, 0x45, 0x56, 0x4D, 0, 0, 0, 4], error: "unsupportedVersion", offset: 4),
        .init(name: "empty input", bytes: [], error: "truncated", offset: 0),
        .init(name: "truncated magic", bytes: [0x51, 0x45, 0x56], error: "truncated", offset: 0),
        .init(name: "no configuration section", bytes: Array(preamble[0..<8]) + [0x01], error: "unexpectedRecord", offset: 8),
        .init(name: "truncated before the configuration", bytes: Array(preamble[0..<8]), error: "truncated", offset: 8),
        .init(name: "truncated machine name length", bytes: Array(preamble[0..<11]), error: "truncated", offset: 9),
        .init(
            name: "absurd machine name length", bytes: Array(preamble[0..<9]) + [0xFF, 0xFF, 0xFF, 0xFF], error: "lengthTooLarge", offset: 9
        ),
        .init(name: "truncated machine name", bytes: Array(preamble[0..<9]) + [0, 0, 0, 5, 0x70, 0x63], error: "truncated", offset: 15),
        .init(
            name: "unknown configuration subsection",
            bytes: stream {
                try $0.writeU8(0x05)
                try $0.writeCountedString("configuration/x")
                try $0.writeBE32(1)
            },
            error: "invalidField", offset: 15),
        .init(name: "unknown section type 0x09", bytes: stream { try $0.writeU8(0x09) }, error: "unknownRecordType", offset: 15),
        .init(name: "VMDESCRIPTION where a record must be", bytes: stream { try $0.writeU8(0x06) }, error: "unexpectedRecord", offset: 15),
        .init(
            name: "footer where a record must be", bytes: stream { try $0.writeFooter(sectionID: 1) }, error: "unexpectedRecord", offset: 15
        ),
        .init(
            name: "PART for a section id never opened",
            bytes: stream { try $0.writeSectionHeader(SectionHeader(kind: .part, sectionID: 9, idstr: "x", instanceID: 0, versionID: 1)) },
            error: "unknownSectionID", offset: 15),
        .init(name: "truncated after the section type", bytes: stream { try $0.writeU8(0x01) }, error: "truncated", offset: 16),
        .init(
            name: "truncated inside the idstr", bytes: stream { try $0.writeBytes([0x01, 0, 0, 0, 2, 3, 0x72, 0x61]) },
            error: "truncated", offset: 23),
        .init(
            name: "truncated inside a ram record word", bytes: ramBody { try $0.writeBytes([0, 0, 0, 0]) },
            error: "truncated", offset: afterRAMHeader),
        .init(
            name: "footer with the wrong section id",
            bytes: ramBody {
                try $0.writeBE64(RAMSaveFlags.eos.rawValue)
                try $0.writeFooter(sectionID: 3)
            },
            error: "badFooter", offset: afterRAMHeader + 8),
        .init(
            name: "footer with the wrong marker",
            bytes: ramBody {
                try $0.writeBE64(RAMSaveFlags.eos.rawValue)
                try $0.writeU8(0x7F)
                try $0.writeBE32(2)
            },
            error: "badFooter", offset: afterRAMHeader + 8),
        .init(
            name: "missing footer, EOF instead",
            bytes: ramBody {
                try $0.writeBE64(RAMSaveFlags.eos.rawValue)
                try $0.writeEOF()
            },
            error: "badFooter", offset: afterRAMHeader + 8),
        .init(
            name: "truncated footer",
            bytes: ramBody {
                try $0.writeBE64(RAMSaveFlags.eos.rawValue)
                try $0.writeBytes([0x7E, 0, 0])
            },
            error: "truncated", offset: afterRAMHeader + 9),
        .init(
            name: "ram XBZRLE page", bytes: ramBody { try $0.writeBE64(RAMSaveFlags.xbzrle.rawValue) },
            error: "badSectionBody", offset: afterRAMHeader),
        .init(
            name: "ram unknown flag 0x400", bytes: ramBody { try $0.writeBE64(0x400) },
            error: "badSectionBody", offset: afterRAMHeader),
        .init(
            name: "ram PAGE and ZERO together", bytes: ramBody { try $0.writeBE64(0x00A) },
            error: "badSectionBody", offset: afterRAMHeader),
        .init(
            name: "ram section version 3",
            bytes: stream {
                try $0.writeSectionHeader(SectionHeader(kind: .start, sectionID: 2, idstr: "ram", instanceID: 0, versionID: 3))
            },
            error: "badSectionBody", offset: afterRAMHeader),
        .init(
            name: "ram page of an unknown block",
            bytes: ramBody {
                try $0.writeBE64(RAMSaveFlags.page.rawValue)
                try $0.writeCountedString("nope")
            },
            error: "badSectionBody", offset: afterRAMHeader + 8),
        .init(
            name: "ram block longer than the total",
            bytes: ramBody {
                try $0.writeBE64(4096 | RAMSaveFlags.memSize.rawValue)
                try $0.writeCountedString("pc.ram")
                try $0.writeBE64(8192)
            },
            error: "badSectionBody", offset: afterRAMHeader + 8),
        .init(
            name: "ram CONTINUE with no block before",
            bytes: ramBody { try $0.writeBE64(RAMSaveFlags.page.rawValue | RAMSaveFlags.continue.rawValue) },
            error: "badSectionBody", offset: afterRAMHeader),
        .init(
            name: "absurd ram total with no blocks",
            bytes: ramBody { try $0.writeBE64(0xFFFF_FFFF_FFFF_F000 | RAMSaveFlags.memSize.rawValue) },
            error: "truncated", offset: afterRAMHeader + 8),
        .init(
            name: "VFIO unknown tag", bytes: vfioBody { try $0.writeBE64(0xFFFF_FFFF_EF10_0009) },
            error: "badSectionBody", offset: afterVFIOHeader),
        .init(
            name: "VFIO absurd DATA chunk size", bytes: vfioBody { try $0.writeVFIODataChunkHeader(size: 1 << 62) },
            error: "lengthTooLarge", offset: afterVFIOHeader + 8),
        .init(
            name: "VFIO SETUP_STATE without END_OF_STATE",
            bytes: vfioBody {
                try $0.writeVFIOTag(.setupState)
                try $0.writeVFIOTag(.dataState)
            },
            error: "badSectionBody", offset: afterVFIOHeader + 8),
        .init(
            name: "VFIO CONFIG_STATE never ended",
            bytes: vfioBody(vfioFull) {
                try $0.writeVFIOTag(.configState)
                try $0.writeBytes([UInt8](repeating: 1, count: 20))
            },
            error: "truncated", offset: afterVFIOHeader + 28),
        .init(
            name: "unknown FULL section with no footer",
            bytes: vfioBody(deviceFull) { try $0.writeBytes([UInt8](repeating: 0x7E, count: 10)) },
            error: "truncated", offset: 15 + 17 + 10),
        .init(name: "unknown command 12", bytes: command(12, length: 0), error: "unknownCommand", offset: 15),
        .init(name: "command id 0", bytes: command(0, length: 0), error: "unknownCommand", offset: 15),
        .init(name: "PING with length 3", bytes: command(2, length: 3, payload: [0, 0, 1]), error: "badCommandLength", offset: 15),
        .init(name: "OPEN_RETURN_PATH with length 1", bytes: command(1, length: 1, payload: [0]), error: "badCommandLength", offset: 15),
        .init(
            name: "SWITCHOVER_START with length 4", bytes: command(11, length: 4, payload: [0, 0, 0, 0]), error: "badCommandLength",
            offset: 15),
        .init(
            name: "POSTCOPY_ADVISE with length 8", bytes: command(3, length: 8, payload: [UInt8](repeating: 0, count: 8)),
            error: "badCommandLength", offset: 15),
        .init(
            name: "RECV_BITMAP name length disagreeing", bytes: command(10, length: 4, payload: [1, 0x61, 0x62, 0x63]),
            error: "badCommandLength", offset: 15),
        .init(
            name: "SWITCHOVER_HELLO with length 4", bytes: command(0x5301, length: 4, payload: [0, 0, 0, 1]), error: "badCommandLength",
            offset: 15),
        .init(name: "truncated command payload", bytes: command(2, length: 4, payload: [0, 0]), error: "truncated", offset: 22),
        .init(
            name: "PACKAGED stream cut short", bytes: command(7, length: 4, payload: [0, 0, 0, 100] + [UInt8](repeating: 0, count: 10)),
            error: "truncated", offset: 34),
        .init(
            name: "EOF followed by a configuration byte",
            bytes: stream {
                try $0.writeEOF()
                try $0.writeU8(0x07)
            },
            error: "unexpectedRecord", offset: 16),
        .init(
            name: "absurd VMDESCRIPTION length",
            bytes: stream {
                try $0.writeEOF()
                try $0.writeU8(0x06)
                try $0.writeBE32(0xFFFF_FFFF)
            },
            error: "lengthTooLarge", offset: 17),
        .init(
            name: "truncated VMDESCRIPTION",
            bytes: stream {
                try $0.writeEOF()
                try $0.writeU8(0x06)
                try $0.writeBE32(10)
                try $0.writeBytes([0x7B, 0x7D])
            },
            error: "truncated", offset: 23),
        .init(
            name: "bytes after the VMDESCRIPTION",
            bytes: stream {
                try $0.writeEOF()
                try $0.writeVMDescription([0x7B, 0x7D])
                try $0.writeU8(0)
            },
            error: "unexpectedRecord", offset: 23)
    ]
    // The VFIO data chunk cut short, at each byte of its payload and header.
    let full = vfioBody {
        try $0.writeVFIODataChunkHeader(size: 100)
        try $0.writeBytes([UInt8](repeating: 9, count: 100))
    }
    for cut in [afterVFIOHeader + 4, afterVFIOHeader + 12, afterVFIOHeader + 16, afterVFIOHeader + 60] {
        let fieldStart = cut < afterVFIOHeader + 8 ? afterVFIOHeader : cut < afterVFIOHeader + 16 ? afterVFIOHeader + 8 : cut
        cases.append(
            .init(name: "VFIO DATA chunk truncated at \(cut)", bytes: Array(full[0..<cut]), error: "truncated", offset: fieldStart))
    }
    return cases
}()

@Suite struct MalformedStreamTests {
    @Test func thereAreAtLeastThirtyMalformedCases() {
        #expect(malformedCases.count >= 30)
    }

    @Test(arguments: malformedCases)
    func malformedStreamFailsWithATypedErrorAtItsOffset(_ c: MalformedCase) {
        for pieces in [[], [1], [3, 7]] {
            let error = walkError(c.bytes, pieceSizes: pieces)
            #expect(caseName(error) == c.error, "\(error.map(String.init(describing:)) ?? "no error")")
            #expect(error?.offset == c.offset, "\(error.map(String.init(describing:)) ?? "no error")")
        }
    }

    @Test func truncationAtEveryByteOfARealStreamGivesATypedError() throws {
        let bytes = try Fixture.bytes("qemu72-pc-i440fx-paused.mig")
        // Every record boundary and a byte inside each of the first records and the last FULL ones.
        let cuts = Array(0..<0x60) + Array(0x3A580..<0x3A5E0) + Array(0x3D700..<0x3D7D7) + Array(0x3D7D8..<0x3D7E0)
        for cut in cuts {
            let error = walkError(Array(bytes[0..<cut]))
            #expect(caseName(error) == "truncated", "cut at \(cut): \(error.map(String.init(describing:)) ?? "no error")")
            #expect(error.map { $0.offset <= cut } == true)
        }
    }

    @Test func invalidVMDescriptionJSONIsATypedError() {
        #expect(throws: StreamError.invalidField(offset: 0, field: "VMDESCRIPTION", reason: "not valid JSON")) {
            try VMDescription(json: Array("{\"devices\": [".utf8))
        }
        #expect(throws: StreamError.invalidField(offset: 5, field: "VMDESCRIPTION", reason: "a device without name or instance_id")) {
            try VMDescription(json: Array("{\"devices\": [{\"name\": \"x\"}]}".utf8), offset: 5)
        }
    }

    @Test func errorMessageNamesTheOffsetAndWhatWasExpected() {
        let error = walkError(Array(preamble[0..<8]) + [0x01])
        #expect(error?.description == "unexpected START (0x1) at byte 8 (0x8): expected the configuration section (0x07)")
    }
}
