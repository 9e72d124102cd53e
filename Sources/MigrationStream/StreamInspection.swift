/// A whole stream file, walked: its machine and every record (what `switchover inspect` shows).
public struct StreamInspection: Sendable, Hashable {
    /// The configuration section (machine type and subsections).
    public var configuration: MachineConfiguration
    /// Every record after the configuration, in stream order.
    public var records: [InspectedRecord]

    public init(configuration: MachineConfiguration, records: [InspectedRecord]) {
        self.configuration = configuration
        self.records = records
    }

    /// Walks the stream file at `path`, using its VMDESCRIPTION trailer (read from the end of
    /// the file first) for FULL body lengths; with `rewritePath`, writes the stream back out
    /// there through ``StreamWriter`` as it is read. `visit` sees each record as it is found.
    public static func inspect(
        fileAt path: String, rewritingTo rewritePath: String? = nil,
        visit: (InspectedRecord) throws -> Void = { _ in }
    ) throws -> StreamInspection {
        // A pipe or a device cannot be read from its end: it is then walked without a trailer.
        let trailer = (try? VMDescriptionTrailer.locate(inFileAt: path)) ?? nil
        let source = try FileDescriptorByteSource(path: path)
        let sink = try rewritePath.map { try FileDescriptorByteSink(creating: $0) }
        let writer = sink.map { StreamWriter(sink: $0, bufferSize: 256 << 10) }
        let walker = try StreamWalker(source: source, mirror: writer, trailer: trailer)
        let config = try walker.readPreamble()
        var records: [InspectedRecord] = []
        try walker.walk { record in
            records.append(record)
            try visit(record)
        }
        try writer?.flush()
        return StreamInspection(configuration: config, records: records)
    }

    /// One JSON object: `{"version": 3, "machine": …, "records": [{"offset": …, "kind": …,
    /// "sectionID", "idstr", "instanceID", "versionID", "bodyLength", "command"}, …]}`, keys that
    /// do not apply left out, in that order.
    public func json() -> String {
        var out = "{\"version\": \(SavevmFormat.version), \"machine\": \(jsonString(configuration.machineType)), \"records\": ["
        for (i, r) in records.enumerated() {
            if i > 0 { out += ", " }
            var fields = ["\"offset\": \(r.offset)", "\"kind\": \"\(r.kind.rawValue)\""]
            if let v = r.sectionID { fields.append("\"sectionID\": \(v)") }
            if let v = r.idstr { fields.append("\"idstr\": \(jsonString(v))") }
            if let v = r.instanceID { fields.append("\"instanceID\": \(v)") }
            if let v = r.versionID { fields.append("\"versionID\": \(v)") }
            if let v = r.bodyLength { fields.append("\"bodyLength\": \(v)") }
            if let v = r.command { fields.append("\"command\": \(v.id)") }
            out += "{" + fields.joined(separator: ", ") + "}"
        }
        return out + "]}"
    }
}

/// A JSON string literal: quotes, backslashes and control characters (and DEL) escaped.
/// Also what MigrationCore's pre-flight inventory and the command-line tools' JSON use.
package func jsonString(_ s: String) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(s.utf8.count + 2)
    appendJSONString(s, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
}

/// Appends `s` as a JSON string literal (UTF-8) to `out`: the escaper behind ``jsonString(_:)``.
/// Byte by byte: every character it escapes is ASCII, and the bytes of a multi-byte character are
/// all 0x80 or above, so they are copied as they are.
package func appendJSONString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    var s = s
    s.withUTF8 { bytes in
        // Most strings need no escape: copied whole.
        guard bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == 0x7f }) else {
            out.append(contentsOf: bytes)
            return
        }
        for b in bytes {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out.append(UInt8(ascii: "\\"))
                out.append(b)
            case UInt8(ascii: "\n"):
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"):
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"):
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "t"))
            case 0..<0x20, 0x7f:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: "\\u00".utf8)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xf)])
            default: out.append(b)
            }
        }
    }
    out.append(UInt8(ascii: "\""))
}

extension SectionBodySummary: CustomStringConvertible {
    /// A one-line summary: RAM blocks and page counts, VFIO tags and chunk sizes, or how an
    /// opaque body's end was found.
    public var description: String {
        switch self {
        case .ram(let r):
            var parts: [String] = []
            if let total = r.totalBytes {
                parts.append("total \(total) B, blocks " + r.blocks.map { "\($0.name)=\($0.usedLength)" }.joined(separator: " "))
            }
            if !r.pageCounts.isEmpty {
                parts.append("pages " + r.pageCounts.map { "\($0.block) \($0.pages)+\($0.zeroPages)z" }.joined(separator: " "))
            }
            if r.multifdFlushes > 0 { parts.append("\(r.multifdFlushes) multifd flush") }
            return parts.isEmpty ? "ram: EOS" : "ram: " + parts.joined(separator: "; ")
        case .vfio(let v):
            return "vfio: " + v.items.map(\.description).joined(separator: " ")
        case .described:
            return "length from VMDESCRIPTION"
        case .scanned:
            return "end found by footer scan"
        case .other(let text):
            return text
        }
    }
}
