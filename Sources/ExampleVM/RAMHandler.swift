import MigrationCore
import MigrationStream

/// Migrates ``GuestRAM`` in QEMU's `ram` section format (idstr "ram", instance 0, version 4),
/// so `switchover inspect` and QEMU's own tools read our streams as they read QEMU's.
///
/// START: a MEM_SIZE record listing the blocks, then EOS. PART: up to ``pagesPerSection``
/// dirty pages (PAGE records, or ZERO records for all-zero pages), then EOS. END: every page
/// still dirty, then EOS. The first record of each section names its block; later records in
/// the same block carry the CONTINUE flag instead.
///
/// Device DMA: when the source tracks the pages devices write (`SaveContext.dirtyMemory`),
/// each pass (``saveIterate(to:context:)``, ``pendingExact(context:)``) first merges them into
/// the RAM's dirty bitmap, and ``saveComplete(to:context:)`` merges them once more — after every
/// device has stopped — before sending what is left.
public final class RAMHandler: MigrationHandler, @unchecked Sendable {
    // @unchecked: `bytesSent`, `dmaPages` and `outsidePages` are touched only by the hooks,
    // which the engine calls from one migration thread at a time (MigrationHandler's threading
    // contract).
    public static let identity = HandlerIdentity(idstr: "ram", instanceID: 0, versionID: 4)

    /// QEMU's `RAM_SAVE_FLAG_*` values (migration/ram.c).
    public enum Flag {
        public static let zero: UInt64 = 0x002
        public static let memSize: UInt64 = 0x004
        public static let page: UInt64 = 0x008
        public static let eos: UInt64 = 0x010
        public static let `continue`: UInt64 = 0x020
        public static let xbzrle: UInt64 = 0x040
        public static let hook: UInt64 = 0x080
        public static let multifdFlush: UInt64 = 0x200
    }

    public let ram: GuestRAM
    /// Pages per PART section: 256 pages = 1 MiB, a bounded chunk per iteration.
    public let pagesPerSection: Int
    private var bytesSent: UInt64 = 0
    private var dmaPages = 0
    private var outsidePages = 0

    /// Source side: the pages device dirty tracking reported that were not already dirty,
    /// merged so far, and the reported pages that lay outside guest RAM (ignored).
    public var mergedDeviceDirtyPages: (merged: Int, outside: Int) { (dmaPages, outsidePages) }

    public init(ram: GuestRAM, pagesPerSection: Int = 256) {
        self.ram = ram
        self.pagesPerSection = max(1, pagesPerSection)
    }

    public var isLive: Bool { true }
    public var hasFullState: Bool { false }

    // MARK: Source

    public func saveSetup(to writer: StreamWriter, context: SaveContext) throws {
        ram.markAllDirty()
        try writer.writeBE64(UInt64(ram.totalBytes) | Flag.memSize)
        for block in ram.layout {
            try writer.writeCountedString(block.name)
            try writer.writeBE64(UInt64(block.size))
        }
        try writer.writeBE64(Flag.eos)
    }

    public func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult {
        try syncDeviceDirtyPages(context)
        try writePages(max: pagesPerSection, to: writer)
        return ram.dirtyPages == 0 ? .done : .more
    }

    public func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        // The final sync: the devices have stopped (the run state stops them before any END
        // section), so this collects the last pages they wrote.
        try syncDeviceDirtyPages(context)
        try writePages(max: Int.max, to: writer)
    }

    public func pendingEstimate(context: SaveContext) -> PendingBytes {
        PendingBytes(mustPrecopy: UInt64(ram.dirtyPages * GuestRAM.pageSize))
    }

    public func pendingExact(context: SaveContext) throws -> PendingBytes {
        try syncDeviceDirtyPages(context)
        return pendingEstimate(context: context)
    }

    /// Merges the pages devices wrote since the previous sync into the RAM's dirty bitmap.
    private func syncDeviceDirtyPages(_ context: SaveContext) throws {
        guard let log = context.dirtyMemory else { return }
        let (newly, outside) = ram.mergeDirty(try log.sync())
        dmaPages += newly
        outsidePages += outside
    }

    private func writePages(max: Int, to writer: StreamWriter) throws {
        var lastBlock = -1
        _ = try ram.takeDirtyPages(max: max) { block, page, bytes in
            let isZero = bytes.allSatisfy { $0 == 0 }
            var header = UInt64(page * GuestRAM.pageSize) | (isZero ? Flag.zero : Flag.page)
            if block == lastBlock { header |= Flag.continue }
            try writer.writeBE64(header)
            if block != lastBlock { try writer.writeCountedString(ram.layout[block].name) }
            lastBlock = block
            if isZero { try writer.writeU8(0) } else { try writer.writeBytes(bytes) }
        }
        try writer.writeBE64(Flag.eos)
    }

    // MARK: Destination

    public func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        var block = -1
        while true {
            let at = reader.offset
            let word = try reader.readBE64("a ram record")
            let flags = word & UInt64(GuestRAM.pageSize - 1)
            let addr = word & ~UInt64(GuestRAM.pageSize - 1)
            if flags & Flag.memSize != 0 {
                try loadBlockList(total: addr | (flags & ~Flag.memSize), reader: reader)
                continue
            }
            if flags == Flag.eos { return }
            guard flags & (Flag.page | Flag.zero) != 0, flags & ~(Flag.page | Flag.zero | Flag.continue) == 0 else {
                throw ExampleVMError.badRAMSection(offset: at, reason: "unsupported record flags 0x\(String(flags, radix: 16))")
            }
            if flags & Flag.continue == 0 {
                let name = try reader.readCountedString("a ram block name")
                guard let index = ram.layout.firstIndex(where: { $0.name == name }) else {
                    throw ExampleVMError.badRAMSection(offset: at, reason: "unknown ram block \"\(name)\"")
                }
                block = index
            }
            guard block >= 0 else {
                throw ExampleVMError.badRAMSection(offset: at, reason: "CONTINUE before any block was named")
            }
            // addr comes from the peer: compare without adding to it (0xFFFFFFFFFFFFF000 + a page
            // would overflow).
            let blockSize = UInt64(ram.layout[block].size)
            guard addr < blockSize, blockSize - addr >= UInt64(GuestRAM.pageSize) else {
                throw ExampleVMError.badRAMSection(
                    offset: at, reason: "page 0x\(String(addr, radix: 16)) is outside block \"\(ram.layout[block].name)\"")
            }
            let page = Int(addr) / GuestRAM.pageSize
            if flags & Flag.zero != 0 {
                ram.loadFill(block: block, page: page, byte: try reader.readU8("a zero page's fill byte"))
            } else {
                var buffer = [UInt8](repeating: 0, count: GuestRAM.pageSize)
                try buffer.withUnsafeMutableBytes { try reader.readExactly(into: $0, "a ram page") }
                buffer.withUnsafeBytes { ram.load(block: block, page: page, bytes: $0) }
            }
        }
    }

    /// Checks the source's block list against ours: same names, same sizes.
    private func loadBlockList(total: UInt64, reader: StreamReader) throws {
        var seen: UInt64 = 0
        var index = 0
        while seen < total {
            let at = reader.offset
            let name = try reader.readCountedString("a ram block name")
            let size = try reader.readBE64("a ram block size")
            guard index < ram.layout.count, ram.layout[index].name == name, UInt64(ram.layout[index].size) == size else {
                throw ExampleVMError.badRAMSection(
                    offset: at, reason: "source block \"\(name)\" (\(size) bytes) does not match this VM's layout")
            }
            seen = [seen, size].saturatingSum
            index += 1
        }
        guard seen == total, index == ram.layout.count else {
            throw ExampleVMError.badRAMSection(offset: reader.offset, reason: "block sizes add up to \(seen), not \(total)")
        }
    }
}
