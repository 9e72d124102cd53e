/// A digest of a byte stream (length + 64-bit hash), used to compare migrated device state without
/// holding it. Independent of how the stream was split into chunks.
public struct VFIOStateDigest: Sendable, Hashable, CustomStringConvertible {
    /// Number of bytes digested.
    public let byteCount: UInt64
    /// The hash of those bytes.
    public let hash: UInt64

    public init(byteCount: UInt64, hash: UInt64) { (self.byteCount, self.hash) = (byteCount, hash) }

    /// The digest of `bytes`.
    public init(of bytes: some Sequence<UInt8>) {
        var hasher = VFIOStateHasher()
        for byte in bytes { hasher.update(byte) }
        self = hasher.finalize()
    }

    public var description: String {
        "\(byteCount) B #" + String(hash, radix: 16)
    }
}

/// Streaming computation of a `VFIOStateDigest`.
public struct VFIOStateHasher: Sendable {
    private var state: UInt64 = 0x243F_6A88_85A3_08D3
    private var partial: UInt64 = 0
    private var partialCount: UInt64 = 0
    private var count: UInt64 = 0

    public init() {}

    @inline(__always)
    private mutating func absorb(_ word: UInt64) {
        state =
            ((state ^ (word &* 0x9E37_79B9_7F4A_7C15)) << 31 | (state ^ (word &* 0x9E37_79B9_7F4A_7C15)) >> 33)
            &* 0xC2B2_AE3D_27D4_EB4F
    }

    /// Adds one byte.
    public mutating func update(_ byte: UInt8) {
        partial |= UInt64(byte) << (partialCount * 8)
        partialCount += 1
        count += 1
        if partialCount == 8 {
            absorb(partial)
            partial = 0
            partialCount = 0
        }
    }

    /// Adds `bytes`.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var index = 0
        while index < bytes.count, partialCount != 0 {
            update(bytes[index])
            index += 1
        }
        while bytes.count - index >= 8 {
            var word: UInt64 = 0
            for k in 0..<8 { word |= UInt64(bytes[index + k]) << (UInt64(k) * 8) }
            absorb(word)
            count += 8
            index += 8
        }
        while index < bytes.count {
            update(bytes[index])
            index += 1
        }
    }

    /// Adds `bytes`.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything added so far (the hasher can keep going).
    public func finalize() -> VFIOStateDigest {
        var copy = self
        if copy.partialCount > 0 { copy.absorb(copy.partial ^ (0xFF << 56)) }
        var h = copy.state ^ copy.count
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        h ^= h >> 31
        return VFIOStateDigest(byteCount: count, hash: h)
    }
}
