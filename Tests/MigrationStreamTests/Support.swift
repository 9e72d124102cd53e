import Foundation
import MigrationStream
import Testing

enum Fixture {
    static let names = ["qemu72-pc-i440fx-paused.mig", "qemu72-q35-booted.mig"]

    static func path(_ name: String) throws -> String {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)).path
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: try path(name))))
    }
}

/// Everything a walk produced: the configuration and the records.
struct Walk: Equatable {
    var configuration: MachineConfiguration
    var records: [InspectedRecord]
}

/// Walks `bytes` handed out in pieces of `pieceSizes`, optionally mirroring into a sink.
func walk(
    _ bytes: [UInt8], pieceSizes: [Int] = [], trailer: VMDescriptionTrailer? = nil,
    mirror: MemoryByteSink? = nil, parsers: [SectionBodyParser] = []
) throws -> Walk {
    let writer = mirror.map { StreamWriter(sink: $0) }
    let walker = try StreamWalker(
        source: MemoryByteSource(bytes, pieceSizes: pieceSizes), mirror: writer,
        trailer: trailer, parsers: parsers)
    let config = try walker.readPreamble()
    var records: [InspectedRecord] = []
    try walker.walk { records.append($0) }
    try writer?.flush()
    return Walk(configuration: config, records: records)
}

/// The error a walk of `bytes` stops with, or nil if it succeeds.
func walkError(_ bytes: [UInt8], pieceSizes: [Int] = [], trailer: VMDescriptionTrailer? = nil) -> StreamError? {
    do {
        _ = try walk(bytes, pieceSizes: pieceSizes, trailer: trailer)
        return nil
    } catch let error as StreamError {
        return error
    } catch {
        Issue.record("not a StreamError: \(error)")
        return nil
    }
}

/// The name of a ``StreamError`` case, for comparing kinds without their messages.
func caseName(_ error: StreamError?) -> String {
    guard let error else { return "no error" }
    return String(String(describing: Mirror(reflecting: error).children.first?.label ?? "\(error)"))
}

/// A deterministic generator for "random" piece sizes.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomPieceSizes(seed: UInt64, count: Int = 257, max: Int = 9000) -> [Int] {
    var rng = SplitMix64(state: seed)
    return (0..<count).map { _ in Int.random(in: 1...max, using: &rng) }
}

/// A synthetic stream in QEMU's layout with a VFIO device (section id 60) beside ram (id 2):
/// START(SETUP,END) / PART(DATA 32,END) / PART(INIT_DATA_SENT) / END(DATA 100,END) /
/// FULL(CONFIG_STATE + 24 bytes + END), then two vmstate FULL sections after it, EOF and a
/// VMDESCRIPTION that describes the three FULL sections.
enum Synthetic {
    static let vfio = SectionHeader(kind: .start, sectionID: 60, idstr: "0000:00:05.0/vfio", instanceID: 0, versionID: 1)
    static let ram = SectionHeader(kind: .start, sectionID: 2, idstr: "ram", instanceID: 0, versionID: 4)
    static let timer = SectionHeader(kind: .full, sectionID: 0, idstr: "timer", instanceID: 0, versionID: 2)
    static let globalstate = SectionHeader(kind: .full, sectionID: 40, idstr: "globalstate", instanceID: 0, versionID: 1)

    /// 24 config bytes that contain a decoy: END_OF_STATE, a footer for id 60, then a byte
    /// that starts no record.
    static let config: [UInt8] = VFIOSectionTag.endOfState.bytes + [0x7E, 0, 0, 0, 60, 0x99] + [UInt8](repeating: 0x11, count: 10)
    /// The timer body (24 bytes) holds a decoy footer for id 0 followed by 0xff.
    static let timerBody: [UInt8] = [0, 0, 0, 1, 0x7E, 0, 0, 0, 0, 0xFF] + [UInt8](repeating: 0x22, count: 14)
    static let globalBody: [UInt8] = [0, 0, 0, 8] + Array("running\0".utf8)

    static let description = """
        {"page_size": 4096, "devices": [\
        {"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2, "fields": [{"name": "ticks", "type": "int64", "size": 8, "array_len": 3}]}, \
        {"name": "0000:00:05.0/vfio", "instance_id": 0, "size": 40, "fields": [{"name": "data", "size": 40, "type": "buffer"}]}, \
        {"name": "globalstate", "instance_id": 0, "vmsd_name": "globalstate", "version": 1, "fields": [{"name": "size", "size": 4, "type": "uint32"}, {"name": "runstate", "size": 8, "type": "buffer"}]}]}
        """

    static func part(_ h: SectionHeader) -> SectionHeader {
        var p = h
        p.kind = .part
        return p
    }
    static func end(_ h: SectionHeader) -> SectionHeader {
        var p = h
        p.kind = .end
        return p
    }
    static func full(_ h: SectionHeader) -> SectionHeader {
        var p = h
        p.kind = .full
        return p
    }

    static func section(_ w: StreamWriter, _ h: SectionHeader, _ body: () throws -> Void) throws {
        try w.writeSectionHeader(h)
        try body()
        try w.writeFooter(sectionID: h.sectionID)
    }

    static func chunk(_ w: StreamWriter, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try w.writeVFIODataChunk($0) }
    }

    /// The bytes, and the offset of the EOF byte.
    static func stream(withTrailer: Bool = true) throws -> (bytes: [UInt8], eofOffset: Int) {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try w.writeFileHeader()
        try w.writeConfiguration(MachineConfiguration(machineType: "pc-i440fx-7.2"))
        try w.writeCommand(.openReturnPath)
        try w.writeCommand(.ping(1))
        try section(w, ram) {
            try w.writeBE64(8192 | RAMSaveFlags.memSize.rawValue)
            try w.writeCountedString("pc.ram")
            try w.writeBE64(8192)
            try w.writeBE64(RAMSaveFlags.eos.rawValue)
        }
        try section(w, vfio) {
            try w.writeVFIOTag(.setupState)
            try w.writeVFIOTag(.endOfState)
        }
        try section(w, part(ram)) {
            try w.writeBE64(0 | RAMSaveFlags.page.rawValue)
            try w.writeCountedString("pc.ram")
            try w.writeBytes([UInt8](repeating: 0x7E, count: 4096))
            try w.writeBE64(4096 | RAMSaveFlags.zero.rawValue | RAMSaveFlags.continue.rawValue)
            try w.writeU8(0)
            try w.writeBE64(RAMSaveFlags.eos.rawValue)
        }
        try section(w, part(vfio)) {
            try chunk(w, [UInt8](repeating: 0x7E, count: 32))
            try w.writeVFIOTag(.endOfState)
        }
        try section(w, part(vfio)) {
            try w.writeVFIOTag(.initDataSent)
        }
        try w.writeCommand(.switchoverStart)
        try section(w, end(ram)) {
            try w.writeBE64(RAMSaveFlags.eos.rawValue)
        }
        try section(w, end(vfio)) {
            try chunk(w, (0..<100).map { UInt8($0) })
            try w.writeVFIOTag(.endOfState)
        }
        try section(w, timer) { try w.writeBytes(timerBody) }
        try section(w, full(vfio)) {
            try w.writeVFIOTag(.configState)
            try w.writeBytes(config)
            try w.writeVFIOTag(.endOfState)
        }
        try section(w, globalstate) { try w.writeBytes(globalBody) }
        let eof = w.bytesWritten
        try w.writeEOF()
        if withTrailer { try w.writeVMDescription(Array(description.utf8)) }
        try w.flush()
        return (sink.bytes, eof)
    }
}
