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
    public static func inspect(fileAt path: String, rewritingTo rewritePath: String? = nil,
                               visit: (InspectedRecord) throws -> Void = { _ in }) throws -> StreamInspection {
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
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || scalar.value == 0x7f:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
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
