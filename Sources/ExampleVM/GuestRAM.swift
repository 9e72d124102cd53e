import Foundation

/// One RAM block of the example guest, as QEMU names them ("pc.ram").
public struct RAMBlockLayout: Sendable, Hashable {
    public var name: String
    /// Size in bytes, a multiple of the page size.
    public var size: Int

    public init(name: String, size: Int) {
        self.name = name
        self.size = size
    }
}

/// Guest memory with a dirty-page bitmap: what a live RAM migration moves.
///
/// Pages are written by the guest workload and read by the migration thread; a lock per RAM
/// makes each page copy atomic with respect to the workload (a real VMM relies on dirty
/// logging instead; the effect on the stream is the same).
public final class GuestRAM: @unchecked Sendable {
    // @unchecked: the page memory is raw pointers the compiler cannot follow; every page
    // access and `dirty`/`dirtyCount` happen under `lock`, and the memory lives until deinit.
    public static let pageSize = 4096

    public let layout: [RAMBlockLayout]
    private let blocks: [UnsafeMutableRawBufferPointer]
    private var dirty: [[UInt64]]
    private var dirtyCount = 0
    private let lock = NSLock()

    /// Allocates zeroed memory for `layout`; refuses block sizes that are not whole pages.
    public init(layout: [RAMBlockLayout]) throws {
        for block in layout where block.size <= 0 || block.size % Self.pageSize != 0 || block.name.utf8.count > 255 {
            throw ExampleVMError.badLayout(
                "block \"\(block.name)\" of \(block.size) bytes: sizes must be whole 4 KiB pages, names at most 255 bytes")
        }
        self.layout = layout
        self.blocks = layout.map {
            let mem = UnsafeMutableRawBufferPointer.allocate(byteCount: $0.size, alignment: Self.pageSize)
            mem.initializeMemory(as: UInt8.self, repeating: 0)
            return mem
        }
        self.dirty = layout.map { [UInt64](repeating: 0, count: ($0.size / Self.pageSize + 63) / 64) }
    }

    deinit { blocks.forEach { $0.deallocate() } }

    public var totalBytes: Int { layout.reduce(0) { $0 + $1.size } }

    public func pageCount(block: Int) -> Int { layout[block].size / Self.pageSize }

    /// Number of pages dirtied and not yet sent.
    public var dirtyPages: Int { lock.withLock { dirtyCount } }

    /// Marks every page dirty (the first pass of a migration sends everything).
    public func markAllDirty() {
        lock.withLock {
            dirtyCount = 0
            for b in layout.indices {
                let pages = pageCount(block: b)
                for w in dirty[b].indices {
                    let bits = min(64, pages - w * 64)
                    dirty[b][w] = bits == 64 ? ~0 : (1 << UInt64(bits)) - 1
                }
                dirtyCount += pages
            }
        }
    }

    /// The guest writes `page` of `block`: fills it from `seed` and marks it dirty.
    public func guestWrite(block: Int, page: Int, seed: UInt64) {
        lock.withLock {
            var x = seed | 1
            let words = blocks[block].baseAddress!.advanced(by: page * Self.pageSize)
                .bindMemory(to: UInt64.self, capacity: Self.pageSize / 8)
            for i in 0..<(Self.pageSize / 8) {
                x ^= x << 13
                x ^= x >> 7
                x ^= x << 17
                words[i] = x
            }
            setDirty(block: block, page: page)
        }
    }

    private func setDirty(block: Int, page: Int) {
        let (w, bit) = (page / 64, UInt64(page % 64))
        if dirty[block][w] & (1 << bit) == 0 {
            dirty[block][w] |= 1 << bit
            dirtyCount += 1
        }
    }

    /// Takes up to `max` dirty pages, clearing their bits, and copies each into `visit`'s
    /// buffer under the lock. Pages are visited in address order, block by block.
    public func takeDirtyPages(max: Int, _ visit: (_ block: Int, _ page: Int, _ bytes: UnsafeRawBufferPointer) throws -> Void) rethrows
        -> Int
    {
        var taken = 0
        for b in layout.indices where taken < max {
            // The word count comes from the layout (immutable), not from the bitmap, which the
            // workload writes: every read of the bitmap happens under the lock.
            for w in 0..<(pageCount(block: b) + 63) / 64 where taken < max {
                while taken < max {
                    let tookOne: Bool = try lock.withLock {
                        let word = dirty[b][w]
                        if word == 0 { return false }
                        let bit = word.trailingZeroBitCount
                        let page = w * 64 + bit
                        dirty[b][w] &= ~(1 << UInt64(bit))
                        dirtyCount -= 1
                        try visit(b, page, UnsafeRawBufferPointer(rebasing: blocks[b][page * Self.pageSize..<(page + 1) * Self.pageSize]))
                        return true
                    }
                    if !tookOne { break }
                    taken += 1
                }
            }
        }
        return taken
    }

    /// Writes a received page (destination side).
    public func load(block: Int, page: Int, bytes: UnsafeRawBufferPointer) {
        lock.withLock {
            UnsafeMutableRawBufferPointer(rebasing: blocks[block][page * Self.pageSize..<(page + 1) * Self.pageSize])
                .copyMemory(from: bytes)
        }
    }

    /// Fills a received zero page (destination side).
    public func loadFill(block: Int, page: Int, byte: UInt8) {
        _ = lock.withLock {
            UnsafeMutableRawBufferPointer(rebasing: blocks[block][page * Self.pageSize..<(page + 1) * Self.pageSize])
                .initializeMemory(as: UInt8.self, repeating: byte)
        }
    }

    /// A 64-bit digest of all memory, to compare source and destination.
    public func digest() -> UInt64 {
        lock.withLock {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for block in blocks {
                let words = block.bindMemory(to: UInt64.self)
                for w in words {
                    h = (h ^ w) &* 0x0000_0100_0000_01B3
                    h ^= h >> 29
                }
            }
            return h
        }
    }
}

/// Errors of the example VM.
public enum ExampleVMError: Error, Sendable, Equatable, CustomStringConvertible {
    case badLayout(String)
    case badRAMSection(offset: Int, reason: String)

    public var description: String {
        switch self {
        case .badLayout(let s): "example VM layout: \(s)"
        case .badRAMSection(let o, let r): "ram section at byte \(o): \(r)"
        }
    }
}
