/// A message on the return path (destination → source): `be16 type, be16 length, payload`.
///
/// Types 1–7 are QEMU's (`MIG_RP_MSG_*`). Types from 0x5301 up are Switchover's extensions,
/// sent only to a source that announced itself with ``MigrationCommand/switchoverHello(version:features:)``.
public enum ReturnPathMessage: Sendable, Hashable {
    /// 1: the destination is done; 0 = success, anything else = failure.
    case shut(UInt32)
    /// 2: answer to a PING.
    case pong(UInt32)
    /// 3: postcopy page request naming a RAM block.
    case requestPagesID(start: UInt64, length: UInt32, block: String)
    /// 4: postcopy page request in the last named block.
    case requestPages(start: UInt64, length: UInt32)
    /// 5: the destination will send a received-pages bitmap for this block (raw data follows).
    case receivedBitmap(block: String)
    /// 6: postcopy resume acknowledgement (value must be 1).
    case resumeAck(UInt32)
    /// 7: every handler that needed it has loaded its initial data; the source may switch over.
    case switchoverAck
    /// 0x5301 (ours): how long a handler has spent loading, so the source can count the
    /// destination's load time in its downtime prediction.
    case loadReport(LoadReport)
    /// 0x5302 (ours): one handler's switchover-ack state changed (acknowledged or revoked).
    case ackState(idstr: String, instanceID: UInt32, acknowledged: Bool)
    /// 0x5303 (ours): the destination's answer to the pre-flight check.
    case preflightResult(accepted: Bool, message: String)
    /// 0x5304 (ours): what one handler holds received but not yet loaded, and how long the
    /// destination expects loading it to take; sent while the destination works, only to a
    /// source whose SWITCHOVER_HELLO set ``SwitchoverFeatures/loadBacklog``.
    case loadBacklog(LoadBacklogReport)

    public static let loadReportType: UInt16 = 0x5301
    public static let ackStateType: UInt16 = 0x5302
    public static let preflightResultType: UInt16 = 0x5303
    public static let loadBacklogType: UInt16 = 0x5304

    public var type: UInt16 {
        switch self {
        case .shut: 1
        case .pong: 2
        case .requestPagesID: 3
        case .requestPages: 4
        case .receivedBitmap: 5
        case .resumeAck: 6
        case .switchoverAck: 7
        case .loadReport: Self.loadReportType
        case .ackState: Self.ackStateType
        case .preflightResult: Self.preflightResultType
        case .loadBacklog: Self.loadBacklogType
        }
    }

    public static func name(of type: UInt16) -> String {
        switch type {
        case 1: "SHUT"
        case 2: "PONG"
        case 3: "REQ_PAGES_ID"
        case 4: "REQ_PAGES"
        case 5: "RECV_BITMAP"
        case 6: "RESUME_ACK"
        case 7: "SWITCHOVER_ACK"
        case loadReportType: "LOAD_REPORT"
        case ackStateType: "ACK_STATE"
        case preflightResultType: "PREFLIGHT_RESULT"
        case loadBacklogType: "LOAD_BACKLOG"
        default: "type \(type)"
        }
    }

    /// Fixed payload lengths; nil for variable ones.
    static func fixedLength(of type: UInt16) -> Int? {
        switch type {
        case 1, 2, 6: 4
        case 4: 12
        case 7: 0
        default: nil
        }
    }

    /// The payload bytes (at most 512).
    public var payload: [UInt8] {
        switch self {
        case .shut(let v), .pong(let v), .resumeAck(let v):
            return bigEndianBytes(v)
        case .requestPagesID(let start, let length, let block):
            return bigEndianBytes(start) + bigEndianBytes(length) + counted(block)
        case .requestPages(let start, let length):
            return bigEndianBytes(start) + bigEndianBytes(length)
        case .receivedBitmap(let block):
            return counted(block)
        case .switchoverAck:
            return []
        case .loadReport(let r):
            return handlerReference(r.idstr, r.instanceID) + bigEndianBytes(r.bytesLoaded)
                + bigEndianBytes(r.loadMicros) + bigEndianBytes(r.fixedCostMicros)
                + bigEndianBytes(r.rateBytes) + bigEndianBytes(r.rateMicros)
        case .ackState(let idstr, let instance, let acked):
            return handlerReference(idstr, instance) + [acked ? 1 : 0]
        case .preflightResult(let accepted, let message):
            let text = Array(message.utf8.prefix(SavevmFormat.maxReturnPathPayload - 3))
            return [accepted ? 1 : 0] + bigEndianBytes(UInt32(text.count)).suffix(2) + text
        case .loadBacklog(let b):
            return handlerReference(b.idstr, b.instanceID) + bigEndianBytes(b.bytes) + bigEndianBytes(b.expectedMicros)
                + bigEndianBytes(b.loadedThrough)
        }
    }

    /// Decodes a payload already bounded by the caller; `offset` is where the message began.
    public static func decode(type: UInt16, payload: [UInt8], offset: Int) throws -> ReturnPathMessage {
        func fail(_ reason: String) -> StreamError {
            .badReturnPathMessage(offset: offset, type: type, reason: reason)
        }
        if let fixed = fixedLength(of: type), fixed != payload.count {
            throw fail("\(name(of: type)) has length \(payload.count), expected \(fixed)")
        }
        var cursor = PayloadCursor(bytes: payload)
        let message: ReturnPathMessage
        switch type {
        case 1: message = .shut(try cursor.be32(fail))
        case 2: message = .pong(try cursor.be32(fail))
        case 3:
            message = .requestPagesID(start: try cursor.be64(fail), length: try cursor.be32(fail), block: try cursor.counted(fail))
        case 4: message = .requestPages(start: try cursor.be64(fail), length: try cursor.be32(fail))
        case 5: message = .receivedBitmap(block: try cursor.counted(fail))
        case 6:
            let v = try cursor.be32(fail)
            guard v == 1 else { throw fail("RESUME_ACK value \(v), expected 1") }
            message = .resumeAck(v)
        case 7: message = .switchoverAck
        case loadReportType:
            let (idstr, instance) = try cursor.handlerReference(fail)
            let bytes = try cursor.be64(fail)
            let micros = try cursor.be64(fail)
            let fixed = try cursor.be64(fail)
            // The two rate fields came later; a report without them rates the totals.
            var rate: (bytes: UInt64, micros: UInt64)?
            if !cursor.isAtEnd { rate = (try cursor.be64(fail), try cursor.be64(fail)) }
            message = .loadReport(
                LoadReport(
                    idstr: idstr, instanceID: instance, bytesLoaded: bytes, loadMicros: micros,
                    fixedCostMicros: fixed, rateBytes: rate?.bytes, rateMicros: rate?.micros))
        case ackStateType:
            let (idstr, instance) = try cursor.handlerReference(fail)
            let flag = try cursor.u8(fail)
            guard flag <= 1 else { throw fail("ACK_STATE flag \(flag), expected 0 or 1") }
            message = .ackState(idstr: idstr, instanceID: instance, acknowledged: flag == 1)
        case preflightResultType:
            let flag = try cursor.u8(fail)
            guard flag <= 1 else { throw fail("PREFLIGHT_RESULT flag \(flag), expected 0 or 1") }
            let hi = try cursor.u8(fail)
            let lo = try cursor.u8(fail)
            let text = try cursor.bytes(Int(hi) << 8 | Int(lo), fail)
            message = .preflightResult(accepted: flag == 1, message: String(decoding: text, as: UTF8.self))
        case loadBacklogType:
            let (idstr, instance) = try cursor.handlerReference(fail)
            let bytes = try cursor.be64(fail)
            let micros = try cursor.be64(fail)
            let through = try cursor.be64(fail)
            message = .loadBacklog(
                LoadBacklogReport(
                    idstr: idstr, instanceID: instance, bytes: bytes, expectedMicros: micros,
                    loadedThrough: through))
        default:
            throw fail("unknown message type")
        }
        guard cursor.isAtEnd else { throw fail("\(cursor.remaining) bytes left after the payload") }
        return message
    }
}

/// The destination's account of one handler's load time (``ReturnPathMessage/loadReport(_:)``).
public struct LoadReport: Sendable, Hashable {
    public var idstr: String
    public var instanceID: UInt32
    /// Bytes of section bodies the handler has consumed so far.
    public var bytesLoaded: UInt64
    /// Time the handler spent in `loadState` so far, in microseconds, not counting the time its
    /// reads waited for the stream.
    public var loadMicros: UInt64
    /// The handler's estimate of the fixed cost of loading its final data (e.g. resource
    /// allocation not yet done), in microseconds.
    public var fixedCostMicros: UInt64
    /// The bytes and load time (µs) counted once the handler's initial data was in (its
    /// switchover acknowledgement; from the start for a handler that needs none): the basis of
    /// the per-byte rate the source applies to the final data. Loading the initial data can
    /// carry a one-off cost (mlx5 allocates firmware resources for the first image) that the
    /// final data does not pay again.
    public var rateBytes: UInt64
    public var rateMicros: UInt64

    /// A report; `rateBytes` and `rateMicros` default to the totals (no initial data set apart).
    public init(
        idstr: String, instanceID: UInt32, bytesLoaded: UInt64, loadMicros: UInt64, fixedCostMicros: UInt64,
        rateBytes: UInt64? = nil, rateMicros: UInt64? = nil
    ) {
        self.idstr = idstr
        self.instanceID = instanceID
        self.bytesLoaded = bytesLoaded
        self.loadMicros = loadMicros
        self.fixedCostMicros = fixedCostMicros
        self.rateBytes = rateBytes ?? bytesLoaded
        self.rateMicros = rateMicros ?? loadMicros
    }

    /// The fewest rate bytes that give a per-byte rate: below it a section's fixed overhead
    /// (tens of µs for a 56-byte section, seen here) would be extrapolated to every final byte.
    public static let minimumRateSample: UInt64 = 1 << 20

    /// The load time per byte to expect of the final data, in microseconds: 0 (unknown) with
    /// fewer than ``minimumRateSample`` rate bytes, when the final data's load time is the
    /// handler's fixed cost alone, as QEMU assumes for every device.
    public var microsPerByte: Double {
        rateBytes >= Self.minimumRateSample ? Double(rateMicros) / Double(rateBytes) : 0
    }
}

/// The destination's backlog for one handler (``ReturnPathMessage/loadBacklog(_:)``): both
/// figures are the peer's, so whatever reads them saturates.
public struct LoadBacklogReport: Sendable, Hashable {
    public var idstr: String
    public var instanceID: UInt32
    /// Bytes received for the handler and not yet loaded (0: the handler is idle).
    public var bytes: UInt64
    /// The time (µs) the destination expects loading them to take, from when it sent this.
    public var expectedMicros: UInt64
    /// The destination's, not the handler's: the main-stream offset up to which it has loaded
    /// every record (what the source wrote before it is done, except what ``bytes`` counts).
    public var loadedThrough: UInt64

    public init(idstr: String, instanceID: UInt32, bytes: UInt64, expectedMicros: UInt64, loadedThrough: UInt64 = 0) {
        self.idstr = idstr
        self.instanceID = instanceID
        self.bytes = bytes
        self.expectedMicros = expectedMicros
        self.loadedThrough = loadedThrough
    }
}

/// The feature bits of SWITCHOVER_HELLO: what the source can take beyond version 1.
public struct SwitchoverFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Bit 0: the source accepts LOAD_BACKLOG (0x5304) on the return path.
    public static let loadBacklog = SwitchoverFeatures(rawValue: 1)
}

private func counted(_ s: String) -> [UInt8] {
    let bytes = Array(s.utf8.prefix(255))
    return [UInt8(bytes.count)] + bytes
}

/// The handler a LOAD_REPORT, ACK_STATE or LOAD_BACKLOG is about: counted idstr, be32 instance id.
private func handlerReference(_ idstr: String, _ instanceID: UInt32) -> [UInt8] {
    counted(idstr) + bigEndianBytes(instanceID)
}

/// Reads fields from a bounded payload.
struct PayloadCursor {
    let bytes: [UInt8]
    var position = 0

    var isAtEnd: Bool { position == bytes.count }
    var remaining: Int { bytes.count - position }

    mutating func bytes(_ n: Int, _ fail: (String) -> StreamError) throws -> ArraySlice<UInt8> {
        guard n <= remaining else { throw fail("payload ends inside a field") }
        defer { position += n }
        return bytes[position..<position + n]
    }

    mutating func u8(_ fail: (String) -> StreamError) throws -> UInt8 { try bytes(1, fail).first ?? 0 }
    mutating func be32(_ fail: (String) -> StreamError) throws -> UInt32 { readBigEndian(try bytes(4, fail), as: UInt32.self) }
    mutating func be64(_ fail: (String) -> StreamError) throws -> UInt64 { readBigEndian(try bytes(8, fail), as: UInt64.self) }
    mutating func counted(_ fail: (String) -> StreamError) throws -> String {
        let n = Int(try u8(fail))
        return String(decoding: try bytes(n, fail), as: UTF8.self)
    }
    /// The handler a LOAD_REPORT, ACK_STATE or LOAD_BACKLOG is about: counted idstr, be32 instance id.
    mutating func handlerReference(_ fail: (String) -> StreamError) throws -> (idstr: String, instanceID: UInt32) {
        (try counted(fail), try be32(fail))
    }
}

extension StreamReader {
    /// Reads one return-path message. Refuses payloads over 512 bytes, as QEMU's source does.
    public func readReturnPathMessage() throws -> ReturnPathMessage {
        let at = offset
        let type = try readBE16("a return-path message type")
        let len = Int(try readBE16("a return-path message length"))
        guard type != 0 else { throw StreamError.badReturnPathMessage(offset: at, type: 0, reason: "type 0 is never valid") }
        guard len <= SavevmFormat.maxReturnPathPayload else {
            throw StreamError.lengthTooLarge(
                offset: at + 2, field: "return-path payload", length: UInt64(len),
                limit: UInt64(SavevmFormat.maxReturnPathPayload))
        }
        let payload = try readBytes(len, "the payload of return-path \(ReturnPathMessage.name(of: type))")
        return try ReturnPathMessage.decode(type: type, payload: payload, offset: at)
    }
}

extension StreamWriter {
    /// Writes one return-path message.
    public func writeReturnPathMessage(_ message: ReturnPathMessage) throws {
        let payload = message.payload
        guard payload.count <= SavevmFormat.maxReturnPathPayload else {
            throw StreamError.lengthTooLarge(
                offset: bytesWritten, field: "return-path payload",
                length: UInt64(payload.count), limit: UInt64(SavevmFormat.maxReturnPathPayload))
        }
        try writeBE16(message.type)
        try writeBE16(UInt16(payload.count))
        try writeBytes(payload)
    }
}
