/// One section body as its owner sees it: reads are counted, every length is bounded before
/// anything is allocated, and, when a ``StreamWalker`` rewrites the stream, every consumed byte
/// is copied to the mirror writer as it is read (so a body is never held whole in memory).
///
/// The walker hands one of these to the ``SectionBodyParser`` that owns a section, positioned
/// just after the section header; the parser reads exactly the body and returns. The footer is
/// the walker's to read.
public final class SectionBodyReader {
    /// The section whose body is being read.
    public internal(set) var header: SectionHeader
    /// Body bytes consumed so far in this section.
    public internal(set) var bytesRead = 0

    let reader: StreamReader
    let mirror: StreamWriter?
    /// Says whether the bytes after a candidate footer start a plausible record (set by the walker).
    var nextRecordCheck: (UnsafeRawBufferPointer, _ ended: Bool, _ offset: Int) throws -> Confirmation = { _, _, _ in .accept }
    private let scratch: UnsafeMutableRawBufferPointer

    init(reader: StreamReader, mirror: StreamWriter?, header: SectionHeader) {
        (self.reader, self.mirror, self.header) = (reader, mirror, header)
        self.scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)
    }

    deinit { scratch.deallocate() }

    /// The stream offset of the next body byte.
    public var offset: Int { reader.offset }

    /// The error to throw for a body that does not parse, at `offset` (default: here).
    public func failure(_ reason: String, at offset: Int? = nil) -> StreamError {
        .badSectionBody(offset: offset ?? reader.offset, idstr: header.binding.idstr, reason: reason)
    }

    /// Reads one body byte; `what` names it in a truncation error.
    public func readU8(_ what: @autoclosure () -> String = "a byte") throws -> UInt8 {
        try consumed(reader.readU8(what())) { try $0.writeU8($1) }
    }

    /// Reads a big-endian 16-bit body field.
    public func readBE16(_ what: @autoclosure () -> String = "a be16") throws -> UInt16 {
        try consumed(reader.readBE16(what())) { try $0.writeBE16($1) }
    }

    /// Reads a big-endian 32-bit body field.
    public func readBE32(_ what: @autoclosure () -> String = "a be32") throws -> UInt32 {
        try consumed(reader.readBE32(what())) { try $0.writeBE32($1) }
    }

    /// Reads a big-endian 64-bit body field.
    public func readBE64(_ what: @autoclosure () -> String = "a be64") throws -> UInt64 {
        try consumed(reader.readBE64(what())) { try $0.writeBE64($1) }
    }

    /// A field just read: copied to the mirror (with `write`) and counted.
    private func consumed<T: FixedWidthInteger>(_ value: T, _ write: (StreamWriter, T) throws -> Void) throws -> T {
        if let mirror { try write(mirror, value) }
        bytesRead += MemoryLayout<T>.size
        return value
    }

    /// Reads `count` bytes into a new array, refusing counts over `limit` before allocating.
    public func readBytes(_ count: Int, limit: Int, _ what: @autoclosure () -> String = "bytes") throws -> [UInt8] {
        guard count >= 0, count <= limit else {
            throw StreamError.lengthTooLarge(offset: reader.offset, field: what(), length: UInt64(max(count, 0)), limit: UInt64(limit))
        }
        let bytes = try reader.readBytes(count, what())
        try mirror?.writeBytes(bytes)
        bytesRead += count
        return bytes
    }

    /// A counted string (one length byte, at most 255 bytes, no NUL).
    public func readCountedString(_ what: @autoclosure () -> String = "a counted string") throws -> String {
        let n = Int(try readU8("the length of \(what())"))
        return String(decoding: try readBytes(n, limit: 255, what()), as: UTF8.self)
    }

    /// Streams `count` body bytes through a fixed buffer, handing each piece to `consume`
    /// (if any) and to the mirror. Memory use does not depend on `count`.
    public func copy(
        _ count: UInt64, _ what: @autoclosure () -> String = "bytes",
        to consume: ((UnsafeRawBufferPointer) throws -> Void)? = nil
    ) throws {
        if consume == nil && mirror == nil {
            try reader.skip(count, what())
            bytesRead += Int(clamping: count)
            return
        }
        var left = count
        while left > 0 {
            let want = Int(min(left, UInt64(scratch.count)))
            let piece = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<want])
            let n = try reader.read(into: piece)
            if n == 0 {
                throw StreamError.truncated(offset: reader.offset, expected: "\(what()) (\(left) more bytes)")
            }
            let got = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
            try consume?(got)
            try mirror?.writeBytes(got)
            left -= UInt64(n)
            bytesRead += n
        }
    }

    /// Consumes and discards `count` body bytes (still mirrored when rewriting).
    public func skip(_ count: UInt64, _ what: @autoclosure () -> String = "bytes") throws {
        try copy(count, what())
    }

    /// Consumes an opaque rest of the body: every byte up to `terminator` (may be empty) that is
    /// immediately followed by this section's footer (0x7e, be32 id) and then by a plausible
    /// record header (a section, a command, or EOF). The terminator and the footer are left
    /// unread. Looks no further ahead than the reader's buffer: nothing is held whole.
    public func consumeUntilFooter(after terminator: [UInt8], _ what: @autoclosure () -> String) throws {
        let pattern = terminator + [RecordType.sectionFooter.rawValue] + bigEndianBytes(header.sectionID)
        let check = nextRecordCheck
        try consume(upTo: pattern, "\(what()) and the footer of section \(header.sectionID) (\"\(header.binding.idstr)\")") {
            try check($0, $1, $2 + pattern.count)
        }
    }

    /// The verdict of a scan's confirmation on the bytes that follow a candidate match.
    enum Confirmation {
        case accept
        case reject
        /// The verdict needs this many bytes after the pattern (more than are buffered).
        case needMore(Int)
    }

    /// Consumes body bytes up to, not including, the first occurrence of `pattern` that
    /// `confirm` accepts, looking at no more than the reader's lookahead at a time.
    /// `confirm` gets the buffered bytes after the pattern, whether the input has ended, and
    /// the stream offset of the match; it must not ask for more than 1 KiB.
    func consume(
        upTo pattern: [UInt8], _ what: String,
        confirm: (UnsafeRawBufferPointer, _ ended: Bool, _ matchOffset: Int) throws -> Confirmation
    ) throws {
        enum Step {
            case found(Int)
            case advance(Int, need: Int)
            case notFound
        }
        var need = pattern.count + 1
        while true {
            let base = reader.offset
            let step: Step = try reader.withBufferedBytes(atLeast: need) { buf in
                let ended = buf.count < need
                var i = 0
                while i + pattern.count <= buf.count {
                    if buf[i] == pattern[0] && pattern.indices.allSatisfy({ buf[i + $0] == pattern[$0] }) {
                        let rest = UnsafeRawBufferPointer(rebasing: buf[(i + pattern.count)...])
                        switch try confirm(rest, ended, base + i) {
                        case .accept: return .found(i)
                        case .reject: break
                        case .needMore(let k):
                            if !ended { return .advance(i, need: pattern.count + min(k, 1024)) }
                        }
                    }
                    i += 1
                }
                if ended { return .notFound }
                return .advance(max(0, buf.count - pattern.count + 1), need: pattern.count + 1)
            }
            switch step {
            case .found(let n):
                try skip(UInt64(n), what)
                return
            case .advance(let n, let newNeed):
                try skip(UInt64(n), what)
                need = newNeed
            case .notFound:
                let left = try reader.withBufferedBytes(atLeast: 0) { $0.count }
                try skip(UInt64(left), what)
                throw StreamError.truncated(offset: reader.offset, expected: what)
            }
        }
    }
}

/// The owner of a kind of section body: it recognises its sections by their binding and
/// reads exactly one body each time it is handed one.
public protocol SectionBodyParser: AnyObject {
    /// True for the sections whose bodies this parser reads.
    func owns(_ binding: SectionBinding) -> Bool
    /// Reads exactly the body of `body.header`'s section and says what was in it.
    func parseBody(_ body: SectionBodyReader) throws -> SectionBodySummary
}

/// What a body held, as far as the walker or its owner could tell.
public enum SectionBodySummary: Sendable, Hashable {
    /// A QEMU `ram` body.
    case ram(RAMBodySummary)
    /// A VFIO device body.
    case vfio(VFIOBodySummary)
    /// An opaque body whose length came from the VMDESCRIPTION trailer.
    case described
    /// An opaque body whose end was found by scanning for its footer.
    case scanned
    /// A body read by a parser of the caller's, with its own description.
    case other(String)
}
