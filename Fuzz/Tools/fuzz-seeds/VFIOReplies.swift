/// Seeds of fuzz-vfio-replies: well-formed kernel answers, in the order the target makes its
/// calls, encoded as its seam reads them (a control byte: the number of buffer patches, or 0x80 |
/// an errno index; for a call carrying a bitmap pointer, a count of u64 words and their bytes;
/// then each patch as offset, length, bytes).
enum VFIOReplies {
    static func le(_ value: UInt64, _ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }

    /// A successful answer.
    static func ok(_ patches: [(Int, [UInt8])] = [], bitmap: [UInt64]? = nil) -> [UInt8] {
        var out: [UInt8] = [UInt8(patches.count)]
        if let bitmap { out += [UInt8(bitmap.count)] + bitmap.flatMap { le($0, 8) } }
        for (offset, bytes) in patches { out += [UInt8(offset), UInt8(bytes.count)] + bytes }
        return out
    }

    /// The target's guest memory: one range of 16 KiB at 1 MiB (4 pages of 4 KiB).
    static let memory: [UInt8] = [0, 0x00, 0x10, 0x00, 0x00, 0]

    /// GET_INFO as Linux answers it: 24 bytes asking for 72, then the migration capability (4 KiB
    /// pages, 256 MiB bitmaps) at 24 and DMA_AVAIL at 56.
    static let getInfo: [UInt8] = {
        let first = ok([(0, le(72, 4) + le(3, 4) + le(0xFFFF_F000, 8) + le(24, 4))])
        let chain =
            le(72, 4) + le(3, 4) + le(0xFFFF_F000, 8) + le(24, 4) + le(0, 4)
            + le(2, 2) + le(1, 2) + le(56, 4) + le(0, 8) + le(4096, 8) + le(256 << 20, 8)
            + le(3, 2) + le(1, 2) + le(0, 4) + le(65535, 4) + le(0, 4)
        return first + ok([(0, chain)])
    }()

    static let type1: [UInt8] =
        getInfo + getInfo + ok() + ok(bitmap: [0b0101]) + ok(bitmap: [0]) + ok() + ok([(16, le(0x4000, 8))])

    static let device: [UInt8] =
        ok() + ok() + ok(bitmap: [1]) + ok(bitmap: [0b1001]) + ok(bitmap: [0]) + ok() + ok()
        + ok([(8, le(7, 8))]) + ok([(8, le(2, 4))]) + ok([(12, le(9, 4))])
        + ok([(8, le(1000, 8) + le(200, 8))]) + ok([(4, le(1, 4)), (8, le(0, 16))])
        + ok([(8, le(4096, 8))]) + ok([(8, le(6, 4))])

    static let iommufd: [UInt8] =
        ok([(16, le(5, 4))]) + ok() + ok(bitmap: [0b1111]) + ok(bitmap: [0b0010]) + ok() + ok([(16, le(0x4000, 8))])

    static let seeds: [(String, [UInt8])] = [
        ("type1", memory + [1] + type1),
        ("device", memory + [2] + device),
        ("iommufd", memory + [4] + iommufd),
        ("all", memory + [7] + type1 + device + iommufd),
        ("errors", memory + [7] + [0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87] + getInfo)
    ]
}
