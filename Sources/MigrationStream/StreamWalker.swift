/// One top-level record of a stream as the walker found it.
public struct InspectedRecord: Sendable, Hashable {
    /// The kinds of record, as `switchover inspect --json` names them.
    public enum Kind: String, Sendable, Hashable {
        case start, part, end, full, command, eof, vmdescription
    }

    /// Where the record's first byte is.
    public var offset: Int
    /// Which record it is.
    public var kind: Kind
    /// Sections: the section id.
    public var sectionID: UInt32?
    /// Sections: the idstr (for PART/END, from the START or FULL that bound the id).
    public var idstr: String?
    /// Sections: the instance id.
    public var instanceID: UInt32?
    /// Sections: the version id.
    public var versionID: UInt32?
    /// Section body bytes (between header and footer); a command's payload, plus for PACKAGED
    /// the nested stream that follows it; the VMDESCRIPTION JSON's length.
    public var bodyLength: Int?
    /// The command, for command records.
    public var command: MigrationCommand?
    /// What a section body held.
    public var body: SectionBodySummary?

    public init(
        offset: Int, kind: Kind, sectionID: UInt32? = nil, idstr: String? = nil, instanceID: UInt32? = nil,
        versionID: UInt32? = nil, bodyLength: Int? = nil, command: MigrationCommand? = nil, body: SectionBodySummary? = nil
    ) {
        self.offset = offset
        self.kind = kind
        self.sectionID = sectionID
        self.idstr = idstr
        self.instanceID = instanceID
        self.versionID = versionID
        self.bodyLength = bodyLength
        self.command = command
        self.body = body
    }
}

/// Walks a whole migration stream record by record, finding the end of every section body:
/// it hands each body to the ``SectionBodyParser`` that owns the section (the caller's first,
/// then the built-in ``RAMBodyParser`` and ``VFIOBodyParser``); a FULL body nobody owns gets
/// its length from the VMDESCRIPTION trailer when one is known and its size lands on the
/// footer; any other body is scanned for its footer (0x7e and the section id) followed by a
/// plausible record header (see docs/wire-format.md).
///
/// Input is read in pieces through a bounded buffer; no body is held whole. With a `mirror`
/// writer, every record is written back out through ``StreamWriter`` as it is read, so a
/// well-formed stream comes out byte for byte.
public final class StreamWalker {
    /// The input's reader.
    public let reader: StreamReader
    private let mirror: StreamWriter?
    private let description: VMDescription?
    private let eofOffset: Int?
    private let customParsers: [SectionBodyParser]
    private let ram = RAMBodyParser()
    private let vfio = VFIOBodyParser()
    private let body: SectionBodyReader
    /// Described FULL bodies still to come, per (idstr, instance id), in emission order.
    private var described: [SectionKey: [Int?]] = [:]

    private enum Phase { case preamble, records, afterEOF, done }
    private var phase = Phase.preamble

    /// The machine configuration, once the preamble has been read.
    public private(set) var configuration: MachineConfiguration?

    private struct SectionKey: Hashable {
        var idstr: String
        var instanceID: UInt32
    }

    /// - Parameters:
    ///   - source: the stream's bytes, in pieces of any size.
    ///   - mirror: a writer that receives the stream again as it is read (for `--rewrite`).
    ///   - trailer: the stream's VMDESCRIPTION, read beforehand from the end of a file
    ///     (``VMDescriptionTrailer/locate(inFileAt:limit:)``); gives FULL body lengths and
    ///     the EOF offset.
    ///   - parsers: body owners consulted before the built-in ones.
    ///   - bufferSize: the read buffer, which bounds the lookahead of footer scans.
    public init(
        source: ByteSource, mirror: StreamWriter? = nil, trailer: VMDescriptionTrailer? = nil,
        parsers: [SectionBodyParser] = [], bufferSize: Int = 256 << 10
    ) throws {
        reader = StreamReader(source: source, bufferSize: max(bufferSize, 4096))
        self.mirror = mirror
        if let trailer {
            let desc = try VMDescription(json: trailer.json, offset: trailer.eofOffset + 6)
            description = desc
            for device in desc.devices {
                described[SectionKey(idstr: device.name, instanceID: device.instanceID), default: []].append(device.bodyLength)
            }
        } else {
            description = nil
        }
        eofOffset = trailer?.eofOffset
        customParsers = parsers
        body = SectionBodyReader(
            reader: reader, mirror: mirror,
            header: SectionHeader(kind: .full, sectionID: 0, idstr: "", instanceID: 0, versionID: 0))
        body.nextRecordCheck = { [unowned self] in self.plausibleRecord($0, ended: $1, at: $2) }
    }

    /// Reads the file header and the configuration section.
    @discardableResult
    public func readPreamble() throws -> MachineConfiguration {
        if let configuration { return configuration }
        try reader.readFileHeader()
        try mirror?.writeFileHeader()
        let config = try reader.readConfiguration()
        try mirror?.writeConfiguration(config)
        if let bits = config.targetPageBits {
            guard (10...16).contains(bits) else {
                throw StreamError.invalidField(offset: reader.offset, field: "target page bits", reason: "\(bits), expected 10 to 16")
            }
            ram.pageSize = 1 << Int(bits)
        } else if let size = description?.pageSize {
            ram.pageSize = size
        }
        ram.ignoreShared = config.capabilities?.contains("x-ignore-shared") ?? false
        configuration = config
        phase = .records
        return config
    }

    /// The next record with its body consumed, or nil after the last one (EOF, or the
    /// VMDESCRIPTION trailer that follows it). Reads the preamble first if needed.
    public func next() throws -> InspectedRecord? {
        switch phase {
        case .preamble:
            try readPreamble()
            return try next()
        case .done:
            return nil
        case .afterEOF:
            phase = .done
            let at = reader.offset
            guard let json = try reader.readVMDescription() else { return nil }
            try mirror?.writeVMDescription(json)
            if try !reader.isAtEnd() {
                throw StreamError.unexpectedRecord(
                    offset: reader.offset, found: "more bytes", expected: "the end of the stream after the VMDESCRIPTION trailer")
            }
            return InspectedRecord(offset: at, kind: .vmdescription, bodyLength: json.count)
        case .records:
            return try nextRecord()
        }
    }

    /// Walks every remaining record, calling `visit` for each.
    public func walk(_ visit: (InspectedRecord) throws -> Void) throws {
        while let record = try next() { try visit(record) }
    }

    private func nextRecord() throws -> InspectedRecord {
        let at = reader.offset
        switch try reader.readRecord() {
        case .eof:
            try mirror?.writeEOF()
            phase = .afterEOF
            return InspectedRecord(offset: at, kind: .eof)
        case .command(let command):
            try mirror?.writeCommand(command)
            var length = command.payload.count
            if case .packaged(let nested) = command {
                body.header = SectionHeader(kind: .full, sectionID: 0, idstr: "PACKAGED", instanceID: 0, versionID: 0)
                body.bytesRead = 0
                try body.skip(UInt64(nested), "the packaged stream")
                length += Int(nested)
            }
            return InspectedRecord(offset: at, kind: .command, bodyLength: length, command: command)
        case .section(let header):
            try mirror?.writeSectionHeader(header)
            body.header = header
            body.bytesRead = 0
            let summary = try readBody(header)
            let length = body.bytesRead
            try reader.readFooter(sectionID: header.sectionID)
            try mirror?.writeFooter(sectionID: header.sectionID)
            let kind: InspectedRecord.Kind =
                switch header.kind {
                case .start: .start
                case .part: .part
                case .end: .end
                case .full: .full
                }
            return InspectedRecord(
                offset: at, kind: kind, sectionID: header.sectionID, idstr: header.binding.idstr,
                instanceID: header.binding.instanceID, versionID: header.binding.versionID,
                bodyLength: length, body: summary)
        }
    }

    private func readBody(_ header: SectionHeader) throws -> SectionBodySummary {
        // Every described FULL section takes its entry, whoever reads its body, so the
        // description list stays in step with the stream.
        var describedLength: Int?
        if header.kind == .full {
            let key = SectionKey(idstr: header.binding.idstr, instanceID: header.binding.instanceID)
            if var queue = described[key], !queue.isEmpty {
                describedLength = queue.removeFirst()
                described[key] = queue
            }
        }
        if let parser = customParsers.first(where: { $0.owns(header.binding) }) {
            return try parser.parseBody(body)
        }
        if ram.owns(header.binding) { return try ram.parseBody(body) }
        if vfio.owns(header.binding) { return try vfio.parseBody(body) }
        if let length = describedLength, try footerFollows(after: length, sectionID: header.sectionID) {
            try body.skip(UInt64(length), "the body of \(header.binding.idstr)")
            return .described
        }
        try body.consumeUntilFooter(after: [], "the body")
        return .scanned
    }

    /// True when `length` body bytes are followed by this section's footer (or when that lies
    /// beyond the lookahead, in which case the footer read will tell). A length the description
    /// got wrong (negative, past the trailer's EOF, overflowing) is false: the body is scanned.
    private func footerFollows(after length: Int, sectionID: UInt32) throws -> Bool {
        let footer = [RecordType.sectionFooter.rawValue] + bigEndianBytes(sectionID)
        guard length >= 0 else { return false }
        let (need, overflow) = length.addingReportingOverflow(footer.count)
        guard !overflow else { return false }
        if let eof = eofOffset, need > eof - reader.offset { return false }
        guard need <= reader.lookaheadCapacity else { return true }
        return try reader.withBufferedBytes(atLeast: need) { buf in
            buf.count >= need && footer.indices.allSatisfy { buf[length + $0] == footer[$0] }
        }
    }

    /// Whether `bytes`, found at stream offset `offset` right after a candidate footer, start a
    /// record that may follow a section: a START/FULL header with a printable idstr and small
    /// instance and version ids, a PART/END header for a bound section id, a known command with
    /// a valid length, or EOF (at the trailer's EOF offset when known, else followed by 0x06).
    func plausibleRecord(_ bytes: UnsafeRawBufferPointer, ended: Bool, at offset: Int) -> SectionBodyReader.Confirmation {
        if let eof = eofOffset, offset > eof { return .reject }
        // At the end of the input any prefix is taken: the record read that follows reports
        // the truncation at its exact offset.
        func need(_ n: Int) -> SectionBodyReader.Confirmation { ended ? .accept : .needMore(n) }
        guard let type = bytes.first else { return need(1) }
        func be32(_ i: Int) -> UInt32 { (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[i + $1]) } }
        switch type {
        case RecordType.eof.rawValue:
            if let eof = eofOffset { return offset == eof ? .accept : .reject }
            guard bytes.count >= 2 else { return need(2) }
            return bytes[1] == RecordType.vmDescription.rawValue ? .accept : .reject
        case RecordType.sectionStart.rawValue, RecordType.sectionFull.rawValue:
            guard bytes.count >= 6 else { return need(6) }
            let len = Int(bytes[5])
            guard len > 0 else { return .reject }
            guard bytes.count >= 14 + len else { return need(14 + len) }
            guard bytes[6..<6 + len].allSatisfy({ (0x20...0x7E).contains($0) }) else { return .reject }
            return be32(6 + len) <= 0xFFFF && be32(10 + len) <= 0xFFFF ? .accept : .reject
        case RecordType.sectionPart.rawValue, RecordType.sectionEnd.rawValue:
            guard bytes.count >= 5 else { return need(5) }
            return reader.boundSections[be32(1)] != nil ? .accept : .reject
        case RecordType.command.rawValue:
            guard bytes.count >= 5 else { return need(5) }
            let id = UInt16(bytes[1]) << 8 | UInt16(bytes[2])
            let length = Int(UInt16(bytes[3]) << 8 | UInt16(bytes[4]))
            guard MigrationCommand.isKnown(id) else { return .reject }
            if let fixed = MigrationCommand.fixedLength(of: id) { return fixed == length ? .accept : .reject }
            return .accept
        default:
            return .reject
        }
    }
}
