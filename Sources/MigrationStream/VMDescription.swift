import Foundation

/// The VMDESCRIPTION trailer's JSON, reduced to what a reader needs: the FULL sections it
/// describes, in emission order, with the body length each description implies.
///
/// QEMU describes every field it wrote with its byte size (an array of plain values once, with
/// `array_len`), and each subsection by its vmstate name; a legacy (`save_state`) device is one
/// `data` buffer of the bytes it wrote. A body's length is therefore the sum of its fields'
/// sizes plus, for each subsection, its header (0x05, counted name, be32 version) and its own
/// fields and subsections. START/PART/END sections are never described.
public struct VMDescription: Sendable, Hashable {
    /// One described FULL section.
    public struct Device: Sendable, Hashable {
        /// The section idstr.
        public var name: String
        public var instanceID: UInt32
        /// The vmstate version, when given.
        public var versionID: UInt32?
        /// The body length the description implies, nil when it cannot be computed.
        public var bodyLength: Int?

        public init(name: String, instanceID: UInt32, versionID: UInt32?, bodyLength: Int?) {
            (self.name, self.instanceID, self.versionID, self.bodyLength) = (name, instanceID, versionID, bodyLength)
        }
    }

    /// `page_size`, when given.
    public var pageSize: Int?
    /// The FULL sections described, in the order they were sent.
    public var devices: [Device]

    public init(pageSize: Int?, devices: [Device]) { (self.pageSize, self.devices) = (pageSize, devices) }

    /// Parses the JSON bytes of a trailer; `offset` is where the JSON starts (for errors).
    public init(json: [UInt8], offset: Int = 0) throws {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(json))
        } catch {
            throw StreamError.invalidField(offset: offset, field: "VMDESCRIPTION", reason: "not valid JSON")
        }
        guard let top = object as? [String: Any] else {
            throw StreamError.invalidField(offset: offset, field: "VMDESCRIPTION", reason: "not a JSON object")
        }
        pageSize = top["page_size"] as? Int
        var devices: [Device] = []
        for entry in top["devices"] as? [[String: Any]] ?? [] {
            guard let name = entry["name"] as? String, let instance = entry["instance_id"] as? Int,
                let instanceID = UInt32(exactly: instance)
            else {
                throw StreamError.invalidField(offset: offset, field: "VMDESCRIPTION", reason: "a device without name or instance_id")
            }
            let version = (entry["version"] as? Int).flatMap { UInt32(exactly: $0) }
            devices.append(
                Device(
                    name: name, instanceID: instanceID, versionID: version,
                    bodyLength: Self.encodedLength(of: entry, depth: 0)))
        }
        self.devices = devices
    }

    /// The bytes a described vmstate (fields, then subsections) takes, or nil if any size is
    /// missing or the nesting is absurd.
    static func encodedLength(of desc: [String: Any], depth: Int) -> Int? {
        guard depth < 32 else { return nil }
        var total = 0
        for field in desc["fields"] as? [[String: Any]] ?? [] {
            guard let size = field["size"] as? Int, size >= 0 else { return nil }
            let count = field["array_len"] as? Int ?? 1
            guard count >= 0 else { return nil }
            let (product, overflow) = size.multipliedReportingOverflow(by: count)
            guard !overflow else { return nil }
            let (sum, sumOverflow) = total.addingReportingOverflow(product)
            guard !sumOverflow else { return nil }
            total = sum
        }
        for sub in desc["subsections"] as? [[String: Any]] ?? [] {
            guard let name = sub["vmsd_name"] as? String, name.utf8.count <= 255,
                let inner = encodedLength(of: sub, depth: depth + 1)
            else { return nil }
            // The subsection header: 0x05, the counted name, be32 version; `inner` is the peer's.
            let (sum, overflow) = total.addingReportingOverflow(1 + 1 + name.utf8.count + 4)
            guard !overflow else { return nil }
            let (withInner, innerOverflow) = sum.addingReportingOverflow(inner)
            guard !innerOverflow else { return nil }
            total = withInner
        }
        return total
    }
}

/// A VMDESCRIPTION trailer found at the end of a stream file.
public struct VMDescriptionTrailer: Sendable, Hashable {
    /// Where the EOF byte (0x00) before the trailer is.
    public var eofOffset: Int
    /// The JSON bytes.
    public var json: [UInt8]

    public init(eofOffset: Int, json: [UInt8]) { (self.eofOffset, self.json) = (eofOffset, json) }

    /// Finds the trailer of a stream file by reading from its end, without walking the stream:
    /// the JSON holds no NUL byte, so the last NUL of the file is the EOF byte or lies in the
    /// be32 length; each of the few places the 0x06 could then be is checked for a length that
    /// reaches exactly the end of the file and JSON that opens with `{`. Reads at most
    /// `limit` + 6 bytes from the end; nil when there is no trailer.
    public static func locate(inFileAt path: String, limit: Int = SavevmFormat.maxVMDescriptionLength) throws -> VMDescriptionTrailer? {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let size = Int(try handle.seekToEnd())
        let floor = max(0, size - limit - 6)
        // Find the last NUL byte, reading backwards a chunk at a time.
        var lastNUL: Int?
        var end = size
        while end > floor, lastNUL == nil {
            let start = max(floor, end - (1 << 20))
            try handle.seek(toOffset: UInt64(start))
            let chunk = [UInt8](try handle.read(upToCount: end - start) ?? Data())
            if let i = chunk.lastIndex(of: 0) { lastNUL = start + i }
            end = start
        }
        guard let nul = lastNUL else { return nil }
        func bytes(_ at: Int, _ count: Int) throws -> [UInt8] {
            guard at >= 0, at + count <= size else { return [] }
            try handle.seek(toOffset: UInt64(at))
            return [UInt8](try handle.read(upToCount: count) ?? Data())
        }
        // The 0x06 is right after the EOF byte, or the NUL is one of the four length bytes.
        for tag in stride(from: nul + 1, through: max(1, nul - 4), by: -1) {
            let head = try bytes(tag - 1, 7)
            guard head.count == 7, head[0] == 0, head[1] == RecordType.vmDescription.rawValue else { continue }
            let length = Int(readBigEndian(head[2..<6], as: UInt32.self))
            guard tag + 5 + length == size, length <= limit, head[6] == UInt8(ascii: "{") else { continue }
            return VMDescriptionTrailer(eofOffset: tag - 1, json: try bytes(tag + 5, length))
        }
        return nil
    }
}
