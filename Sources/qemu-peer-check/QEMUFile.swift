// A QEMU-written migration file, walked with MigrationStream's StreamWalker: where each record is, and
// the VFIO sections' device data and config state (what the check compares a loaded device with). The
// file is cut down to its VFIO sections by the library (SectionSelection, SelectedFileTransport).

#if os(Linux)
import Glibc
import MigrationStream

struct QEMUFileError: Error, CustomStringConvertible {
    var description: String
}

/// What a QEMU file holds for one VFIO device.
struct QEMUVFIOContent {
    var idstr: String
    var instanceID: UInt32
    var versionID: UInt32
    /// The DATA chunks in stream order, concatenated: the device's migration stream.
    var data: [UInt8] = []
    /// The CONFIG_STATE bytes of its FULL section (up to the END_OF_STATE).
    var config: [UInt8]?
    /// The section items, e.g. "START: SETUP_STATE END_OF_STATE".
    var items: [String] = []
}

struct QEMUFile {
    /// The largest file read (QEMU's file of a 64 MiB guest is a few MiB).
    static let maxBytes = 512 << 20

    let bytes: [UInt8]
    let configuration: MachineConfiguration
    /// (offset, end, record) for every record up to and including EOF.
    let records: [(start: Int, end: Int, record: InspectedRecord)]
    /// Where the first record starts: header and configuration come before.
    let preambleEnd: Int

    init(path: String) throws {
        bytes = try Self.readAll(path)
        let trailer = try VMDescriptionTrailer.locate(inFileAt: path)
        let walker = try StreamWalker(source: MemoryByteSource(bytes), trailer: trailer)
        configuration = try walker.readPreamble()
        var found: [InspectedRecord] = []
        while let record = try walker.next() {
            found.append(record)
            if record.kind == .eof { break }
        }
        guard let first = found.first, found.last?.kind == .eof else { throw QEMUFileError(description: "\(path): no EOF record") }
        preambleEnd = first.offset
        var list: [(Int, Int, InspectedRecord)] = []
        for (i, record) in found.enumerated() {
            let end = i + 1 < found.count ? found[i + 1].offset : record.offset + 1
            list.append((record.offset, end, record))
        }
        records = list
    }

    /// The records of VFIO sections (idstr ending in /vfio).
    var vfioRecords: [(start: Int, end: Int, record: InspectedRecord)] {
        records.filter { $0.record.idstr?.hasSuffix(VFIOSectionTag.idstrSuffix) ?? false && $0.record.sectionID != nil }
    }

    /// The VFIO devices' data and config state, in order of first appearance.
    func vfioContent() throws -> [QEMUVFIOContent] {
        var devices: [QEMUVFIOContent] = []
        for (start, _, record) in vfioRecords {
            guard let idstr = record.idstr, let length = record.bodyLength else { continue }
            let headerLength: Int
            switch record.kind {
            case .start, .full: headerLength = 1 + 4 + 1 + idstr.utf8.count + 4 + 4
            default: headerLength = 1 + 4
            }
            let bodyStart = start + headerLength
            guard bodyStart + length <= bytes.count else { throw QEMUFileError(description: "\(idstr): body past the end of the file") }
            let body = Array(bytes[bodyStart..<bodyStart + length])
            var index = devices.firstIndex { $0.idstr == idstr }
            if index == nil {
                devices.append(QEMUVFIOContent(idstr: idstr, instanceID: record.instanceID ?? 0, versionID: record.versionID ?? 0))
                index = devices.count - 1
            }
            guard let i = index else { continue }
            try Self.parseVFIOBody(body, kind: record.kind, into: &devices[i])
        }
        return devices
    }

    static func parseVFIOBody(_ body: [UInt8], kind: InspectedRecord.Kind, into device: inout QEMUVFIOContent) throws {
        var at = 0
        var names: [String] = []
        func be64(_ i: Int) throws -> UInt64 {
            guard i >= 0, i + 8 <= body.count else {
                throw QEMUFileError(description: "\(device.idstr): VFIO body ends inside a field at \(i)")
            }
            return (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(body[i + $1]) }
        }
        while at < body.count {
            let raw = try be64(at)
            guard let tag = VFIOSectionTag(rawValue: raw) else {
                throw QEMUFileError(description: "\(device.idstr): unknown VFIO tag 0x\(String(raw, radix: 16)) at body byte \(at)")
            }
            at += 8
            switch tag {
            case .dataState:
                let size = try be64(at)
                at += 8
                guard size <= UInt64(body.count - at) else {
                    throw QEMUFileError(description: "\(device.idstr): DATA of \(size) bytes past the body")
                }
                device.data += body[at..<at + Int(size)]
                at += Int(size)
                names.append("DATA(\(size))")
            case .configState:
                // The config vmstate runs to the END_OF_STATE that closes the body.
                guard body.count - at >= 8 else { throw QEMUFileError(description: "\(device.idstr): CONFIG_STATE without END_OF_STATE") }
                device.config = Array(body[at..<body.count - 8])
                names.append("CONFIG_STATE(\(body.count - 8 - at))")
                at = body.count - 8
            default:
                names.append(tag.description)
            }
        }
        device.items.append("\(kind.rawValue.uppercased()): " + names.joined(separator: " "))
    }

    static func readAll(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw QEMUFileError(description: "cannot open \(path): errno \(errno)") }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw QEMUFileError(description: "read \(path): errno \(errno)") }
            if n == 0 { break }
            guard out.count <= maxBytes - n else { throw QEMUFileError(description: "\(path) is larger than \(maxBytes) bytes") }
            out += buffer[0..<n]
        }
        return out
    }
}
#endif
