import VFIO

/// Deterministic device content: the byte at `offset` of stream `stream` is a function of
/// (seed, stream, offset) only, so any range can be produced on demand without storing the state.
enum DerivedBytes {
    @inline(__always)
    static func word(seed: UInt64, stream: UInt64, index: UInt64) -> UInt64 {
        var z = seed &+ stream &* 0xD1B5_4A32_D192_ED03 &+ index &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Fills `buffer` with the bytes at `offset ..< offset + buffer.count` of the stream.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer, seed: UInt64, stream: UInt64, offset: UInt64) {
        var position = offset
        var index = 0
        while index < buffer.count {
            let value = word(seed: seed, stream: stream, index: position >> 3)
            var lane = position & 7
            while lane < 8, index < buffer.count {
                buffer[index] = UInt8(truncatingIfNeeded: value >> (lane * 8))
                lane += 1
                index += 1
                position += 1
            }
        }
    }

    /// The bytes at `offset ..< offset + count` of the stream.
    static func bytes(seed: UInt64, stream: UInt64, offset: UInt64 = 0, count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(UnsafeMutableRawBufferPointer(buffer), seed: seed, stream: stream, offset: offset)
            initialized = count
        }
    }
}
