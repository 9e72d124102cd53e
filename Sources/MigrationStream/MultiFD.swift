/// Numbers of QEMU's multifd channels (migration/multifd.h, reference §6).
public enum MultiFDFormat {
    /// `MULTIFD_MAGIC`: the first be32 of every multifd channel header and packet.
    public static let magic: UInt32 = 0x1122_3344
    /// `MULTIFD_VERSION`.
    public static let version: UInt32 = 1
    /// `MULTIFD_FLAG_DEVICE_STATE`: a packet carrying one device-state buffer.
    public static let flagDeviceState: UInt32 = 0x40
    /// Our default bound on one device-state buffer (QEMU's VFIO buffers are at most 1 MiB).
    public static let defaultMaxPacketSize = 64 << 20

    /// Checks that `bytes` is a whole header of `length` bytes opening with the multifd magic
    /// and version, as channel headers and packets both do.
    static func checkPrefix(_ bytes: [UInt8], length: Int, offset: Int, _ what: String) throws {
        guard bytes.count == length else {
            throw StreamError.truncated(offset: offset + min(bytes.count, length), expected: what)
        }
        let magic = readBigEndian(bytes[0..<4], as: UInt32.self)
        guard magic == Self.magic else {
            throw StreamError.invalidField(
                offset: offset, field: "multifd magic", reason: "0x\(String(magic, radix: 16)), expected 0x11223344")
        }
        let found = readBigEndian(bytes[4..<8], as: UInt32.self)
        guard found == Self.version else {
            throw StreamError.invalidField(offset: offset + 4, field: "multifd version", reason: "\(found), expected 1")
        }
    }
}

/// The 64-byte header that opens every multifd channel (`MultiFDInit_t`): be32 magic,
/// be32 version 1, the 16-byte VM uuid, u8 channel id, 39 reserved bytes (written as zero,
/// ignored on read).
public struct MultiFDInit: Sendable, Hashable {
    /// Bytes on the wire.
    public static let encodedLength = 64

    /// The VM uuid; the destination refuses a channel whose uuid differs from its own.
    public var uuid: [UInt8]
    /// The channel number, from 0.
    public var channelID: UInt8

    public init(uuid: [UInt8], channelID: UInt8) { (self.uuid, self.channelID) = (uuid, channelID) }

    /// The 64 bytes of the header. Throws if the uuid is not 16 bytes.
    public func encoded() throws -> [UInt8] {
        guard uuid.count == 16 else {
            throw StreamError.invalidField(offset: 8, field: "multifd channel uuid", reason: "\(uuid.count) bytes, expected 16")
        }
        var out = bigEndianBytes(MultiFDFormat.magic) + bigEndianBytes(MultiFDFormat.version) + uuid + [channelID]
        out += [UInt8](repeating: 0, count: Self.encodedLength - out.count)
        return out
    }

    /// Decodes the 64 header bytes; `offset` is where they start in the stream (for errors).
    public static func decode(_ bytes: [UInt8], offset: Int = 0) throws -> MultiFDInit {
        try MultiFDFormat.checkPrefix(bytes, length: encodedLength, offset: offset, "a 64-byte multifd channel header")
        return MultiFDInit(uuid: Array(bytes[8..<24]), channelID: bytes[24])
    }
}

/// The 276-byte header of a multifd device-state packet (`MultiFDPacketDeviceState_t`):
/// be32 magic, be32 version 1, be32 flags 0x40, idstr[256] (NUL-terminated, zero padded),
/// be32 instance id, be32 size of the buffer that follows.
public struct MultiFDDeviceStatePacketHeader: Sendable, Hashable {
    /// Bytes on the wire, without the buffer.
    public static let encodedLength = 276
    static let idstrField = 256

    /// The idstr of the handler the buffer belongs to (at most 255 bytes, no NUL).
    public var idstr: String
    /// The handler's instance id.
    public var instanceID: UInt32
    /// The size of the device-state buffer that follows the header.
    public var nextPacketSize: UInt32

    public init(idstr: String, instanceID: UInt32, nextPacketSize: UInt32) {
        (self.idstr, self.instanceID, self.nextPacketSize) = (idstr, instanceID, nextPacketSize)
    }

    /// The 276 header bytes. Throws if the idstr does not fit or contains a NUL.
    public func encoded() throws -> [UInt8] {
        let name = Array(idstr.utf8)
        guard !name.isEmpty, name.count < Self.idstrField, !name.contains(0) else {
            throw StreamError.invalidField(
                offset: 12, field: "multifd packet idstr",
                reason: "\(name.count) bytes; it must be 1 to 255 bytes without NUL")
        }
        var out =
            bigEndianBytes(MultiFDFormat.magic) + bigEndianBytes(MultiFDFormat.version) + bigEndianBytes(MultiFDFormat.flagDeviceState)
        out += name + [UInt8](repeating: 0, count: Self.idstrField - name.count)
        out += bigEndianBytes(instanceID) + bigEndianBytes(nextPacketSize)
        return out
    }

    /// Decodes the 276 header bytes, refusing a buffer size over `maxPacketSize`.
    /// `offset` is where the header starts in the channel (for errors).
    public static func decode(_ bytes: [UInt8], offset: Int = 0, maxPacketSize: Int = MultiFDFormat.defaultMaxPacketSize) throws
        -> MultiFDDeviceStatePacketHeader
    {
        try MultiFDFormat.checkPrefix(bytes, length: encodedLength, offset: offset, "a 276-byte multifd device-state packet header")
        let flags = readBigEndian(bytes[8..<12], as: UInt32.self)
        guard flags == MultiFDFormat.flagDeviceState else {
            throw StreamError.invalidField(
                offset: offset + 8, field: "multifd packet flags",
                reason: "0x\(String(flags, radix: 16)), expected 0x40 (device state, no compression)")
        }
        let field = bytes[12..<12 + idstrField]
        guard field.last == 0, let nul = field.firstIndex(of: 0) else {
            throw StreamError.invalidField(
                offset: offset + 12 + idstrField - 1, field: "multifd packet idstr", reason: "not NUL-terminated")
        }
        guard nul > field.startIndex else {
            throw StreamError.invalidField(offset: offset + 12, field: "multifd packet idstr", reason: "empty")
        }
        let instance = readBigEndian(bytes[268..<272], as: UInt32.self)
        let size = readBigEndian(bytes[272..<276], as: UInt32.self)
        guard UInt64(size) <= UInt64(max(maxPacketSize, 0)) else {
            throw StreamError.lengthTooLarge(
                offset: offset + 272, field: "multifd device-state packet", length: UInt64(size), limit: UInt64(max(maxPacketSize, 0)))
        }
        return MultiFDDeviceStatePacketHeader(
            idstr: String(decoding: field[field.startIndex..<nul], as: UTF8.self),
            instanceID: instance, nextPacketSize: size)
    }
}

/// The 12-byte header QEMU's VFIO puts at the start of each device-state buffer
/// (`VFIODeviceStatePacket`): be32 version 0, be32 idx, be32 flags; the device data follows.
public struct VFIODeviceStatePacketHeader: Sendable, Hashable {
    /// Bytes on the wire, before the device data.
    public static let encodedLength = 12
    /// `VFIO_DEVICE_STATE_PACKET_VER_CURRENT`.
    public static let currentVersion: UInt32 = 0
    /// `VFIO_DEVICE_STATE_CONFIG_STATE`: the last buffer, holding the config state
    /// (the same bytes as the non-multifd FULL body).
    public static let flagConfigState: UInt32 = 1

    /// The buffer's place in the device's sequence, from 0; the destination writes in idx order.
    public var index: UInt32
    /// Bit 0: ``flagConfigState``; no other bit is defined.
    public var flags: UInt32

    public init(index: UInt32, flags: UInt32 = 0) { (self.index, self.flags) = (index, flags) }

    /// True for the last buffer, which carries the config state.
    public var isConfigState: Bool { flags & Self.flagConfigState != 0 }

    /// The 12 header bytes.
    public func encoded() -> [UInt8] {
        bigEndianBytes(Self.currentVersion) + bigEndianBytes(index) + bigEndianBytes(flags)
    }

    /// Decodes the first 12 bytes of a device-state buffer.
    public static func decode(_ bytes: some Collection<UInt8>, offset: Int = 0) throws -> VFIODeviceStatePacketHeader {
        let head = Array(bytes.prefix(encodedLength))
        guard head.count == encodedLength else {
            throw StreamError.truncated(offset: offset + head.count, expected: "a 12-byte VFIO device-state packet header")
        }
        let version = readBigEndian(head[0..<4], as: UInt32.self)
        guard version == currentVersion else {
            throw StreamError.invalidField(offset: offset, field: "VFIO device-state packet version", reason: "\(version), expected 0")
        }
        let index = readBigEndian(head[4..<8], as: UInt32.self)
        guard index != UInt32.max else {
            throw StreamError.invalidField(
                offset: offset + 4, field: "VFIO device-state packet idx", reason: "0xffffffff is not a valid index")
        }
        let flags = readBigEndian(head[8..<12], as: UInt32.self)
        guard flags & ~flagConfigState == 0 else {
            throw StreamError.invalidField(
                offset: offset + 8, field: "VFIO device-state packet flags", reason: "unknown bits 0x\(String(flags, radix: 16))")
        }
        return VFIODeviceStatePacketHeader(index: index, flags: flags)
    }
}

extension StreamWriter {
    /// Writes the 64-byte multifd channel header.
    public func writeMultiFDInit(_ header: MultiFDInit) throws {
        try writeBytes(try header.encoded())
    }

    /// Writes a device-state packet header; the caller writes `nextPacketSize` bytes after it.
    public func writeMultiFDDeviceStatePacketHeader(_ header: MultiFDDeviceStatePacketHeader) throws {
        try writeBytes(try header.encoded())
    }
}

extension StreamReader {
    /// Reads the 64-byte multifd channel header.
    public func readMultiFDInit() throws -> MultiFDInit {
        let at = offset
        return try MultiFDInit.decode(try readBytes(MultiFDInit.encodedLength, "a multifd channel header"), offset: at)
    }

    /// Reads a device-state packet header (not its buffer), refusing buffers over `maxPacketSize`.
    public func readMultiFDDeviceStatePacketHeader(maxPacketSize: Int = MultiFDFormat.defaultMaxPacketSize) throws
        -> MultiFDDeviceStatePacketHeader
    {
        let at = offset
        let bytes = try readBytes(MultiFDDeviceStatePacketHeader.encodedLength, "a multifd device-state packet header")
        return try MultiFDDeviceStatePacketHeader.decode(bytes, offset: at, maxPacketSize: maxPacketSize)
    }
}
