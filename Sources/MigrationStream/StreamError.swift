/// Why a migration stream could not be read. Every case carries the byte offset in the
/// stream where the problem was found.
public enum StreamError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input ended inside a record; `expected` says what was being read.
    case truncated(offset: Int, expected: String)
    /// The first four bytes are not "QEVM".
    case badMagic(offset: Int, found: UInt32)
    /// The obsolete version 2 format.
    case obsoleteVersion(offset: Int)
    /// A version other than 3.
    case unsupportedVersion(offset: Int, found: UInt32)
    /// A byte that does not start any record QEMU defines, where a record must start.
    case unknownRecordType(offset: Int, found: UInt8)
    /// A record was found where another one was required (e.g. no configuration section).
    case unexpectedRecord(offset: Int, found: String, expected: String)
    /// The footer after a section body is not 0x7e followed by the section's id.
    case badFooter(offset: Int, sectionID: UInt32, found: String)
    /// A command id outside 1...11 or not known to us.
    case unknownCommand(offset: Int, id: UInt16)
    /// A command whose length differs from its fixed length, or exceeds its bound.
    case badCommandLength(offset: Int, command: String, length: Int, expected: String)
    /// A length field larger than the bound we accept.
    case lengthTooLarge(offset: Int, field: String, length: UInt64, limit: UInt64)
    /// A field whose value is not acceptable; `reason` says why.
    case invalidField(offset: Int, field: String, reason: String)
    /// A PART or END section for a section id that no START or FULL section bound.
    case unknownSectionID(offset: Int, sectionID: UInt32)
    /// A return-path message type we do not know, or one with a bad length.
    case badReturnPathMessage(offset: Int, type: UInt16, reason: String)
    /// A section body a handler could not parse.
    case badSectionBody(offset: Int, idstr: String, reason: String)

    /// The stream offset the error refers to.
    public var offset: Int {
        switch self {
        case .truncated(let o, _), .badMagic(let o, _), .obsoleteVersion(let o),
            .unsupportedVersion(let o, _), .unknownRecordType(let o, _),
            .unexpectedRecord(let o, _, _), .badFooter(let o, _, _), .unknownCommand(let o, _),
            .badCommandLength(let o, _, _, _), .lengthTooLarge(let o, _, _, _),
            .invalidField(let o, _, _), .unknownSectionID(let o, _),
            .badReturnPathMessage(let o, _, _), .badSectionBody(let o, _, _):
            return o
        }
    }

    public var description: String {
        let at = "at byte \(offset) (0x\(String(offset, radix: 16)))"
        switch self {
        case .truncated(_, let what):
            return "stream ends \(at): expected \(what)"
        case .badMagic(_, let found):
            // 0x16 0x03: a TLS handshake record, from a source that uses TLS.
            let tls = found >> 16 == 0x1603 ? " (a TLS handshake: the source uses TLS, this end does not; see docs/security.md)" : ""
            return "bad magic \(at): expected 0x5145564d (\"QEVM\"), found 0x\(String(found, radix: 16))\(tls)"
        case .obsoleteVersion:
            return "version 2 stream \(at): the v2 format is obsolete, only version 3 is supported"
        case .unsupportedVersion(_, let found):
            return "unsupported stream version \(found) \(at): expected 3"
        case .unknownRecordType(_, let found):
            return "unknown record type 0x\(String(found, radix: 16)) \(at): expected a section, command or EOF"
        case .unexpectedRecord(_, let found, let expected):
            return "unexpected \(found) \(at): expected \(expected)"
        case .badFooter(_, let id, let found):
            return "bad section footer \(at): expected 0x7e and section id \(id), found \(found)"
        case .unknownCommand(_, let id):
            return "unknown command \(id) \(at)"
        case .badCommandLength(_, let cmd, let len, let expected):
            return "command \(cmd) \(at) has length \(len): expected \(expected)"
        case .lengthTooLarge(_, let field, let len, let limit):
            return "\(field) \(at) is \(len) bytes: the limit is \(limit)"
        case .invalidField(_, let field, let reason):
            return "invalid \(field) \(at): \(reason)"
        case .unknownSectionID(_, let id):
            return "section id \(id) \(at) was not opened by a START or FULL section"
        case .badReturnPathMessage(_, let type, let reason):
            return "bad return-path message type \(type) \(at): \(reason)"
        case .badSectionBody(_, let idstr, let reason):
            return "bad body in section \"\(idstr)\" \(at): \(reason)"
        }
    }
}
