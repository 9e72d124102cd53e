/// A stream file cut down to the sections a destination has handlers for: the byte ranges to
/// feed it (file header and configuration, the kept sections, every command, EOF and the
/// VMDESCRIPTION trailer after it) and what was skipped.
///
/// A file another VMM wrote (QEMU's `migrate "exec:cat > FILE"`) carries sections no handler
/// here knows: `ram` and QEMU's device vmstates (timer, cpu, apic, …), whose FULL bodies have
/// no length of their own. The ``StreamWalker`` finds each record's end: RAM and VFIO bodies by
/// parsing them, any other FULL body by the size the file's VMDESCRIPTION gives it, checked
/// against the section footer that must follow. A file without a VMDESCRIPTION trailer is
/// refused; so is one whose records the walker cannot follow (a size that does not land on a
/// footer, a truncated body): every refusal is a ``StreamError``, never a trap. Nothing is
/// held in memory but the plan: the walker reads through a bounded buffer, and the description
/// is parsed from at most ``SavevmFormat/maxVMDescriptionLength`` bytes with checked arithmetic.
public struct SectionSelection: Sendable, Hashable {
    /// A section the plan leaves out (every record of it: START, PARTs, END or a FULL).
    public struct Skipped: Sendable, Hashable {
        public var idstr: String
        public var instanceID: UInt32
        /// Its records in the file.
        public var records: Int
        /// Their bytes, headers and footers included.
        public var bytes: Int
    }

    /// The most records a plan follows (a QEMU file of a small guest has a few hundred; each
    /// RAM iteration is one): a bound on the plan's size for a hostile file.
    public static let maxRecords = 1 << 20

    /// The file's byte ranges to read, in order, adjacent ones merged.
    public private(set) var ranges: [Range<Int>] = []
    /// The sections left out, in order of first appearance.
    public private(set) var skipped: [Skipped] = []
    /// The idstrs of the sections kept.
    public private(set) var kept: [String] = []
    /// The machine configuration the file carries.
    public let configuration: MachineConfiguration

    /// The bytes the ranges cover.
    public var keptBytes: Int { ranges.reduce(0) { $0 + $1.count } }

    /// Plans the file at `path`; `keep` decides per section (idstr, instance id).
    public init(fileAt path: String, keep: (_ idstr: String, _ instanceID: UInt32) -> Bool) throws {
        guard let trailer = try VMDescriptionTrailer.locate(inFileAt: path) else {
            throw StreamError.invalidField(
                offset: 0, field: "VMDESCRIPTION",
                reason: "\(path) has no VMDESCRIPTION trailer: sections without a handler cannot be skipped by their size")
        }
        let source = try FileDescriptorByteSource(path: path)
        let walker = try StreamWalker(source: source, trailer: trailer)
        configuration = try walker.readPreamble()
        var plan: [Range<Int>] = [0..<walker.reader.offset]
        var skippedIndex: [String: Int] = [:]
        var keptSet: Set<String> = []
        var count = 0
        while let record = try walker.next() {
            count += 1
            guard count <= Self.maxRecords else {
                throw StreamError.invalidField(
                    offset: record.offset, field: "records", reason: "more than \(Self.maxRecords) records in one file")
            }
            if record.kind == .eof {
                // EOF and the trailer after it, to the end of the file.
                plan.append(record.offset..<(trailer.eofOffset + 6 + trailer.json.count))
                break
            }
            let range = record.offset..<walker.reader.offset
            guard let idstr = record.idstr, record.sectionID != nil else {
                plan.append(range)  // a command
                continue
            }
            let instance = record.instanceID ?? 0
            if keep(idstr, instance) {
                plan.append(range)
                if keptSet.insert(idstr).inserted { kept.append(idstr) }
                continue
            }
            let key = "\(idstr)#\(instance)"
            if let i = skippedIndex[key] {
                skipped[i].records += 1
                skipped[i].bytes += range.count
            } else {
                skippedIndex[key] = skipped.count
                skipped.append(Skipped(idstr: idstr, instanceID: instance, records: 1, bytes: range.count))
            }
        }
        guard let last = plan.last, last.upperBound == trailer.eofOffset + 6 + trailer.json.count else {
            throw StreamError.truncated(offset: walker.reader.offset, expected: "the EOF record before the VMDESCRIPTION trailer")
        }
        for range in plan where !range.isEmpty {
            if let previous = ranges.last, previous.upperBound == range.lowerBound {
                ranges[ranges.count - 1] = previous.lowerBound..<range.upperBound
            } else {
                ranges.append(range)
            }
        }
    }
}
