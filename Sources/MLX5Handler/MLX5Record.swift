/// The header of one record in mlx5_vfio_pci's migration data stream (16 bytes,
/// little-endian): `u64 size` of the payload, `u32 flags` (bit 0: optional), `u32 tag`.
public struct MLX5RecordHeader: Sendable, Hashable {
    public static let byteCount = 16
    /// Flag bit 0: a receiver that does not know the tag may skip the record.
    public static let optionalFlag: UInt32 = 1

    public var payloadSize: UInt64
    public var flags: UInt32
    public var tag: MLX5RecordTag

    public init(payloadSize: UInt64, flags: UInt32, tag: MLX5RecordTag) {
        (self.payloadSize, self.flags, self.tag) = (payloadSize, flags, tag)
    }

    public var isOptional: Bool { flags & Self.optionalFlag != 0 }

    public init(bytes: some Collection<UInt8>) {
        let b = Array(bytes.prefix(16))
        func le<T: FixedWidthInteger>(_ range: Range<Int>, _: T.Type) -> T {
            range.reversed().reduce(T(0)) { $0 << 8 | T(b[$1]) }
        }
        self.payloadSize = le(0..<8, UInt64.self)
        self.flags = le(8..<12, UInt32.self)
        self.tag = MLX5RecordTag(rawValue: le(12..<16, UInt32.self))
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: payloadSize >> (8 * UInt64(i)))) }
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: flags >> (8 * UInt32(i)))) }
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: tag.rawValue >> (8 * UInt32(i)))) }
        return out
    }
}

/// A record tag. Tags the driver defines today are 0 and 1; others may appear in newer drivers.
public struct MLX5RecordTag: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// A firmware image (SAVE_VHCA_STATE output); mandatory.
    public static let firmwareData = MLX5RecordTag(rawValue: 0)
    /// `u64 stop_copy_size`: what the source pre-allocated for the final image; optional.
    public static let stopCopySize = MLX5RecordTag(rawValue: 1)

    public var description: String {
        switch self {
        case .firmwareData: "FW_DATA"
        case .stopCopySize: "STOP_COPY_SIZE"
        default: "tag \(rawValue)"
        }
    }
}

/// Why an mlx5 record stream was refused.
public enum MLX5RecordError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A record whose payload is larger than the bound (the driver refuses over 2^32-1).
    case recordTooLarge(offset: UInt64, size: UInt64, limit: UInt64)
    /// A mandatory record with a tag this parser does not know (the driver: EOPNOTSUPP).
    case unknownMandatoryTag(offset: UInt64, tag: UInt32)
    /// A STOP_COPY_SIZE record whose payload is not 8 bytes.
    case badStopCopySizeRecord(offset: UInt64, size: UInt64)

    public var description: String {
        switch self {
        case .recordTooLarge(let o, let s, let l):
            "mlx5 record at stream offset \(o) has \(s) payload bytes; the limit is \(l)"
        case .unknownMandatoryTag(let o, let t):
            "mlx5 record at stream offset \(o) has unknown mandatory tag \(t)"
        case .badStopCopySizeRecord(let o, let s):
            "mlx5 STOP_COPY_SIZE record at stream offset \(o) has \(s) payload bytes, expected 8"
        }
    }
}

/// Follows an mlx5 record stream as it passes through, in pieces of any size, without
/// holding any payload: it reports record boundaries, the STOP_COPY_SIZE value, and refuses
/// what the driver would refuse. Memory: one 16-byte header and one 8-byte value.
public struct MLX5RecordParser: Sendable {
    /// What the parser saw in one `consume` call.
    public enum Event: Sendable, Hashable {
        /// A header completed at `offset` (the stream offset of its first byte).
        case header(MLX5RecordHeader, offset: UInt64)
        /// The source announced the size of its final image.
        case stopCopySize(UInt64)
        /// A record's payload has been fully seen.
        case recordEnd(MLX5RecordTag, offset: UInt64)
    }

    /// The driver's bound: a LOAD command's size field is 32 bits.
    public static let defaultRecordLimit: UInt64 = UInt64(UInt32.max)

    public let recordLimit: UInt64
    /// Stream bytes consumed so far.
    public private(set) var offset: UInt64 = 0
    /// The last STOP_COPY_SIZE announced (0 until one arrives).
    public private(set) var announcedStopCopySize: UInt64 = 0
    /// Completed records by tag.
    public private(set) var recordCount: [UInt32: Int] = [:]

    private var header: [UInt8] = []
    private var current: MLX5RecordHeader?
    private var currentStart: UInt64 = 0
    private var payloadLeft: UInt64 = 0
    private var valueBytes: [UInt8] = []

    public init(recordLimit: UInt64 = MLX5RecordParser.defaultRecordLimit) {
        self.recordLimit = recordLimit
        header.reserveCapacity(16)
    }

    /// The record whose payload is arriving: its header and the payload bytes seen so far.
    public var openRecord: (header: MLX5RecordHeader, received: UInt64)? {
        current.map { ($0, $0.payloadSize - payloadLeft) }
    }

    /// True between records (a stream may end only here).
    public var isAtRecordBoundary: Bool { current == nil && header.isEmpty }

    /// Feeds the next bytes of the stream; returns what completed within them.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) throws(MLX5RecordError) -> [Event] {
        var events: [Event] = []
        var i = 0
        while i < bytes.count {
            if let rec = current {
                let n = Int(min(UInt64(bytes.count - i), payloadLeft))
                if rec.tag == .stopCopySize {
                    valueBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + n]))
                }
                i += n
                offset += UInt64(n)
                payloadLeft -= UInt64(n)
                if payloadLeft == 0 { finishRecord(rec, into: &events) }
                continue
            }
            let n = min(16 - header.count, bytes.count - i)
            header.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + n]))
            i += n
            offset += UInt64(n)
            if header.count == 16 {
                let h = MLX5RecordHeader(bytes: header)
                let start = offset - 16
                header.removeAll(keepingCapacity: true)
                guard h.payloadSize <= recordLimit else {
                    throw .recordTooLarge(offset: start, size: h.payloadSize, limit: recordLimit)
                }
                if h.tag != .firmwareData && h.tag != .stopCopySize && !h.isOptional {
                    throw .unknownMandatoryTag(offset: start, tag: h.tag.rawValue)
                }
                if h.tag == .stopCopySize && h.payloadSize != 8 {
                    throw .badStopCopySizeRecord(offset: start, size: h.payloadSize)
                }
                events.append(.header(h, offset: start))
                current = h
                currentStart = start
                payloadLeft = h.payloadSize
                valueBytes.removeAll(keepingCapacity: true)
                if payloadLeft == 0 { finishRecord(h, into: &events) }
            }
        }
        return events
    }

    private mutating func finishRecord(_ rec: MLX5RecordHeader, into events: inout [Event]) {
        if rec.tag == .stopCopySize, valueBytes.count == 8 {
            let value = valueBytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            announcedStopCopySize = value
            events.append(.stopCopySize(value))
        }
        recordCount[rec.tag.rawValue, default: 0] += 1
        events.append(.recordEnd(rec.tag, offset: currentStart))
        current = nil
    }
}
