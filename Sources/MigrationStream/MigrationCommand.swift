/// A `QEMU_VM_COMMAND` record: `0x08, be16 id, be16 length, payload` (no footer).
///
/// Ids 1–11 are QEMU's (migration/savevm.c `MIG_CMD_*`). Ids from 0x5300 up are Switchover's
/// own extensions (see docs/wire-format.md); a source sends them only after its peer is known
/// to be Switchover, because a QEMU destination refuses any id it does not know.
public enum MigrationCommand: Sendable, Hashable {
    /// 1: the destination opens the return path on the same connection.
    case openReturnPath
    /// 2: the destination answers with a return-path PONG carrying the same value.
    case ping(UInt32)
    /// 3: postcopy advice: empty, or be64 host page size summary and be64 target page size.
    case postcopyAdvise([UInt8])
    /// 4
    case postcopyListen
    /// 5
    case postcopyRun
    /// 6: RAM discard ranges (kept as raw payload).
    case postcopyRAMDiscard([UInt8])
    /// 7: a nested stream of `length` bytes follows the command, outside its payload.
    case packaged(length: UInt32)
    /// 8
    case enableCOLO
    /// 9
    case postcopyResume
    /// 10: counted RAM block name.
    case recvBitmap(String)
    /// 11 (QEMU 10.0+): the switchover point; the destination starts its device load threads.
    case switchoverStart
    /// 0x5301 (ours): the source speaks Switchover's extensions; payload be32 protocol
    /// version, be32 feature bits.
    case switchoverHello(version: UInt32, features: UInt32)
    /// 0x5302 (ours): the source's device inventory for the pre-flight check (JSON).
    case preflight([UInt8])

    /// The command id on the wire.
    public var id: UInt16 {
        switch self {
        case .openReturnPath: 1
        case .ping: 2
        case .postcopyAdvise: 3
        case .postcopyListen: 4
        case .postcopyRun: 5
        case .postcopyRAMDiscard: 6
        case .packaged: 7
        case .enableCOLO: 8
        case .postcopyResume: 9
        case .recvBitmap: 10
        case .switchoverStart: 11
        case .switchoverHello: MigrationCommand.switchoverHelloID
        case .preflight: MigrationCommand.preflightID
        }
    }

    public static let switchoverHelloID: UInt16 = 0x5301
    public static let preflightID: UInt16 = 0x5302

    /// QEMU's name for a command id, or ours for an extension.
    public static func name(of id: UInt16) -> String {
        switch id {
        case 1: "OPEN_RETURN_PATH"
        case 2: "PING"
        case 3: "POSTCOPY_ADVISE"
        case 4: "POSTCOPY_LISTEN"
        case 5: "POSTCOPY_RUN"
        case 6: "POSTCOPY_RAM_DISCARD"
        case 7: "PACKAGED"
        case 8: "ENABLE_COLO"
        case 9: "POSTCOPY_RESUME"
        case 10: "RECV_BITMAP"
        case 11: "SWITCHOVER_START"
        case switchoverHelloID: "SWITCHOVER_HELLO"
        case preflightID: "SWITCHOVER_PREFLIGHT"
        default: "command \(id)"
        }
    }

    public var name: String { MigrationCommand.name(of: id) }

    /// True for QEMU's ids 1–11 and our extension ids.
    public static func isKnown(_ id: UInt16) -> Bool {
        (1...11).contains(id) || id == switchoverHelloID || id == preflightID
    }

    /// The fixed payload length of a command id, nil when variable.
    public static func fixedLength(of id: UInt16) -> Int? {
        switch id {
        case 1, 4, 5, 8, 9, 11: 0
        case 2, 7: 4
        case switchoverHelloID: 8
        default: nil
        }
    }

    /// The payload bytes.
    public var payload: [UInt8] {
        switch self {
        case .openReturnPath, .postcopyListen, .postcopyRun, .enableCOLO, .postcopyResume, .switchoverStart:
            return []
        case .ping(let v), .packaged(let v):
            return bigEndianBytes(v)
        case .postcopyAdvise(let p), .postcopyRAMDiscard(let p), .preflight(let p):
            return p
        case .recvBitmap(let name):
            let bytes = Array(name.utf8.prefix(255))
            return [UInt8(bytes.count)] + bytes
        case .switchoverHello(let version, let features):
            return bigEndianBytes(version) + bigEndianBytes(features)
        }
    }
}

func bigEndianBytes(_ v: UInt32) -> [UInt8] {
    [
        UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8),
        UInt8(truncatingIfNeeded: v)
    ]
}

func bigEndianBytes(_ v: UInt64) -> [UInt8] {
    bigEndianBytes(UInt32(truncatingIfNeeded: v >> 32)) + bigEndianBytes(UInt32(truncatingIfNeeded: v))
}

func readBigEndian<T: FixedWidthInteger>(_ bytes: ArraySlice<UInt8>, as: T.Type) -> T {
    var v: T = 0
    for b in bytes { v = v << 8 | T(b) }
    return v
}

extension StreamReader {
    /// Reads a command's id, length and payload (the 0x08 already consumed at `at`).
    func readCommandBody(at: Int) throws -> MigrationCommand {
        let id = try readBE16("the command id")
        let len = Int(try readBE16("the command length"))
        let name = MigrationCommand.name(of: id)
        guard MigrationCommand.isKnown(id) else { throw StreamError.unknownCommand(offset: at, id: id) }
        if let fixed = MigrationCommand.fixedLength(of: id), fixed != len {
            throw StreamError.badCommandLength(offset: at, command: name, length: len, expected: "\(fixed)")
        }
        if id == 3, len != 0, len != 16 {
            throw StreamError.badCommandLength(offset: at, command: name, length: len, expected: "0 or 16")
        }
        if id == 10, len < 2 {
            throw StreamError.badCommandLength(offset: at, command: name, length: len, expected: "at least 2")
        }
        let payload = try readBytes(len, "the payload of \(name)")
        switch id {
        case 1: return .openReturnPath
        case 2: return .ping(readBigEndian(payload[...], as: UInt32.self))
        case 3: return .postcopyAdvise(payload)
        case 4: return .postcopyListen
        case 5: return .postcopyRun
        case 6: return .postcopyRAMDiscard(payload)
        case 7: return .packaged(length: readBigEndian(payload[...], as: UInt32.self))
        case 8: return .enableCOLO
        case 9: return .postcopyResume
        case 10:
            let n = Int(payload[0])
            guard n == len - 1 else {
                throw StreamError.badCommandLength(offset: at, command: name, length: len, expected: "1 + block name length \(n)")
            }
            return .recvBitmap(String(decoding: payload[1...], as: UTF8.self))
        case 11: return .switchoverStart
        case MigrationCommand.switchoverHelloID:
            return .switchoverHello(
                version: readBigEndian(payload[0..<4], as: UInt32.self),
                features: readBigEndian(payload[4..<8], as: UInt32.self))
        default: return .preflight(payload)
        }
    }
}

extension StreamWriter {
    /// Writes a command record. Refuses payloads over 65 535 bytes.
    public func writeCommand(_ command: MigrationCommand) throws {
        let payload = command.payload
        guard payload.count <= Int(UInt16.max) else {
            throw StreamError.lengthTooLarge(
                offset: bytesWritten, field: "\(command.name) payload",
                length: UInt64(payload.count), limit: UInt64(UInt16.max))
        }
        try writeU8(RecordType.command.rawValue)
        try writeBE16(command.id)
        try writeBE16(UInt16(payload.count))
        try writeBytes(payload)
    }
}
