/// Splits one fuzz input into the pieces a target needs: flag bytes, length-prefixed parts,
/// the rest. Reading past the end gives zeros and empty parts, never a trap.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var position = 0

    public init(_ raw: UnsafeRawBufferPointer) { bytes = Array(raw) }
    public init(bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }

    /// The next byte, 0 past the end.
    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    /// A big-endian 32-bit value from the next four bytes (missing ones count as 0).
    public mutating func be32() -> UInt32 {
        (0..<4).reduce(UInt32(0)) { v, _ in v << 8 | UInt32(byte()) }
    }

    /// Up to `count` next bytes.
    public mutating func take(_ count: Int) -> [UInt8] {
        let n = max(0, min(count, remaining))
        defer { position += n }
        return Array(bytes[position..<position + n])
    }

    /// A part framed as be32 length + bytes (the length clamped to what is left).
    public mutating func part() -> [UInt8] { take(Int(be32())) }

    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { take(remaining) }

    /// Frames parts as ``part()`` reads them: how the seed tool writes multi-part inputs.
    public static func frame(_ parts: [[UInt8]]) -> [UInt8] {
        parts.flatMap { p in
            [
                UInt8(truncatingIfNeeded: p.count >> 24), UInt8(truncatingIfNeeded: p.count >> 16),
                UInt8(truncatingIfNeeded: p.count >> 8), UInt8(truncatingIfNeeded: p.count)
            ] + p
        }
    }
}
