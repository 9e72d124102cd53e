/// The flag bits in the low bits of each be64 record word of QEMU's `ram` section body
/// (migration/ram.c `RAM_SAVE_FLAG_*`, reference §2.9).
public struct RAMSaveFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// A page whose bytes are all the fill byte that follows (always 0).
    public static let zero = RAMSaveFlags(rawValue: 0x002)
    /// The block list: the address field is the total RAM size.
    public static let memSize = RAMSaveFlags(rawValue: 0x004)
    /// A page of raw bytes.
    public static let page = RAMSaveFlags(rawValue: 0x008)
    /// The end of this section body.
    public static let eos = RAMSaveFlags(rawValue: 0x010)
    /// Same block as the previous record: the block name is omitted.
    public static let `continue` = RAMSaveFlags(rawValue: 0x020)
    /// An XBZRLE-encoded page (not supported).
    public static let xbzrle = RAMSaveFlags(rawValue: 0x040)
    /// RDMA hook (not supported).
    public static let hook = RAMSaveFlags(rawValue: 0x080)
    /// A compressed page (removed from QEMU in 9.1; not supported).
    public static let compressPage = RAMSaveFlags(rawValue: 0x100)
    /// A multifd synchronisation marker.
    public static let multifdFlush = RAMSaveFlags(rawValue: 0x200)

    /// Every flag bit QEMU has defined.
    public static let all: RAMSaveFlags = [.zero, .memSize, .page, .eos, .continue, .xbzrle, .hook, .compressPage, .multifdFlush]
}

/// A RAM block as the START section's block list names it.
public struct RAMBlockInfo: Sendable, Hashable {
    /// The block name, e.g. "pc.ram".
    public var name: String
    /// The bytes of the block in use (its migrated size).
    public var usedLength: UInt64

    public init(name: String, usedLength: UInt64) { (self.name, self.usedLength) = (name, usedLength) }
}

/// Page counts for one RAM block within one section body.
public struct RAMPageCount: Sendable, Hashable {
    /// The block name.
    public var block: String
    /// Pages sent with their bytes.
    public var pages: Int
    /// Pages sent as zero pages.
    public var zeroPages: Int

    public init(block: String, pages: Int, zeroPages: Int) { (self.block, self.pages, self.zeroPages) = (block, pages, zeroPages) }
}

/// What one `ram` section body held.
public struct RAMBodySummary: Sendable, Hashable {
    /// The total RAM size of a block list (START sections), nil otherwise.
    public var totalBytes: UInt64?
    /// The block list (START sections).
    public var blocks: [RAMBlockInfo]
    /// Pages per block, in the order the blocks first appear in this body.
    public var pageCounts: [RAMPageCount]
    /// MULTIFD_FLUSH markers.
    public var multifdFlushes: Int

    public init(totalBytes: UInt64? = nil, blocks: [RAMBlockInfo] = [], pageCounts: [RAMPageCount] = [], multifdFlushes: Int = 0) {
        (self.totalBytes, self.blocks, self.pageCounts, self.multifdFlushes) = (totalBytes, blocks, pageCounts, multifdFlushes)
    }
}

/// Reads QEMU's `ram` section bodies (idstr "ram", version 4): MEM_SIZE block lists, pages,
/// zero pages, MULTIFD_FLUSH markers, up to EOS. Page bytes are streamed through, never kept.
/// XBZRLE, RDMA hooks, compressed pages and unknown flags are refused with a typed error.
///
/// It keeps the block list from the START section, so later PART/END bodies must name known
/// blocks, and the last block for CONTINUE records.
public final class RAMBodyParser: SectionBodyParser {
    /// Target page size: the bytes of one PAGE record, and the mask of the flag bits.
    public var pageSize: Int
    /// Whether block list entries carry the be64 memory-region address (capability x-ignore-shared).
    public var ignoreShared: Bool
    /// The block list seen in the START section.
    public private(set) var blocks: [RAMBlockInfo] = []
    private var lastBlock: String?

    /// The most blocks a MEM_SIZE list may name (QEMU machines have a handful).
    public static let maxBlocks = 4096

    /// A parser for a target page size of `pageSize` bytes; `ignoreShared` when the stream has capability x-ignore-shared.
    public init(pageSize: Int = 4096, ignoreShared: Bool = false) { (self.pageSize, self.ignoreShared) = (pageSize, ignoreShared) }

    /// The section with idstr "ram".
    public func owns(_ binding: SectionBinding) -> Bool { binding.idstr == "ram" }

    public func parseBody(_ body: SectionBodyReader) throws -> SectionBodySummary {
        let version = body.header.binding.versionID
        guard version == 4 else {
            throw body.failure("ram section version \(version), only version 4 is supported")
        }
        guard pageSize >= 1024, pageSize <= 1 << 16, pageSize & (pageSize - 1) == 0 else {
            throw body.failure("target page size \(pageSize) is not a power of two between 1 KiB and 64 KiB")
        }
        var summary = RAMBodySummary()
        var counts: [String: Int] = [:]  // block name → index in summary.pageCounts
        func count(_ block: String, zero: Bool) {
            let i: Int
            if let known = counts[block] {
                i = known
            } else {
                i = summary.pageCounts.count
                counts[block] = i
                summary.pageCounts.append(RAMPageCount(block: block, pages: 0, zeroPages: 0))
            }
            if zero { summary.pageCounts[i].zeroPages += 1 } else { summary.pageCounts[i].pages += 1 }
        }
        let mask = UInt64(pageSize - 1)
        while true {
            let at = body.offset
            let word = try body.readBE64("a ram record (be64 address and flags)")
            let flags = RAMSaveFlags(rawValue: word & mask)
            let addr = word & ~mask
            let unknown = RAMSaveFlags(rawValue: flags.rawValue & ~RAMSaveFlags.all.rawValue)
            guard unknown.isEmpty else {
                throw body.failure("unknown ram flags 0x\(String(unknown.rawValue, radix: 16))", at: at)
            }
            let kind = flags.subtracting(.continue)
            switch kind {
            case .eos:
                return .ram(summary)
            case .memSize:
                summary.totalBytes = addr
                blocks = try readBlockList(total: addr, body)
                summary.blocks = blocks
            case .zero, .page:
                let block = try blockName(continuing: flags.contains(.continue), body, at: at)
                if kind == .zero {
                    _ = try body.readU8("the fill byte of a zero page")
                } else {
                    try body.copy(UInt64(pageSize), "a ram page of \(block)")
                }
                count(block, zero: kind == .zero)
            case .multifdFlush:
                summary.multifdFlushes += 1
            case .xbzrle:
                throw body.failure("XBZRLE-encoded pages are not supported", at: at)
            case .hook:
                throw body.failure("RDMA hooks are not supported", at: at)
            case .compressPage:
                throw body.failure("compressed pages are not supported", at: at)
            default:
                throw body.failure("ram flags 0x\(String(flags.rawValue, radix: 16)) do not name one record kind", at: at)
            }
        }
    }

    private func readBlockList(total: UInt64, _ body: SectionBodyReader) throws -> [RAMBlockInfo] {
        var list: [RAMBlockInfo] = []
        var left = total
        while left > 0 {
            let at = body.offset
            guard list.count < Self.maxBlocks else {
                throw body.failure("more than \(Self.maxBlocks) ram blocks", at: at)
            }
            let name = try body.readCountedString("a ram block name")
            let length = try body.readBE64("the used length of ram block \(name)")
            if ignoreShared { _ = try body.readBE64("the memory-region address of ram block \(name)") }
            guard length <= left else {
                throw body.failure("ram block \(name) of \(length) bytes exceeds the \(left) bytes left of the total", at: at)
            }
            left -= length
            list.append(RAMBlockInfo(name: name, usedLength: length))
        }
        return list
    }

    private func blockName(continuing: Bool, _ body: SectionBodyReader, at: Int) throws -> String {
        if continuing {
            guard let last = lastBlock else {
                throw body.failure("CONTINUE record with no previous block", at: at)
            }
            return last
        }
        let nameAt = body.offset
        let name = try body.readCountedString("a ram block name")
        guard blocks.contains(where: { $0.name == name }) else {
            throw body.failure("unknown ram block \"\(name)\"", at: nameAt)
        }
        lastBlock = name
        return name
    }
}
