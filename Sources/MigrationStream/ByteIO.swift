/// Where a stream reader gets its bytes: a socket, a file, a memory buffer, a test that
/// hands out one byte at a time.
///
/// `read(into:)` returns how many bytes it placed at the start of `buffer` (at least one),
/// or 0 at the end of the input. It may return fewer bytes than asked for.
public protocol ByteSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// Where a stream writer puts its bytes. `write` writes all of `bytes` or throws.
public protocol ByteSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// A byte source over bytes in memory, handing them out in pieces whose sizes come from
/// `pieceSizes` (cycled), so tests can split input every way they like.
public final class MemoryByteSource: ByteSource {
    private let bytes: [UInt8]
    private var position = 0
    private let pieceSizes: [Int]
    private var pieceIndex = 0

    public init(_ bytes: [UInt8], pieceSizes: [Int] = []) {
        self.bytes = bytes
        self.pieceSizes = pieceSizes.filter { $0 > 0 }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard position < bytes.count, buffer.count > 0 else { return 0 }
        var n = min(buffer.count, bytes.count - position)
        if !pieceSizes.isEmpty {
            n = min(n, pieceSizes[pieceIndex % pieceSizes.count])
            pieceIndex += 1
        }
        bytes.withUnsafeBytes { src in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[position..<position + n]))
        }
        position += n
        return n
    }
}

/// A byte sink that keeps everything written to it, for tests and for building payloads.
public final class MemoryByteSink: ByteSink {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        // A typed buffer appends with one copy; a raw one would be appended byte by byte.
        self.bytes.append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
    }

    public func removeAll() { bytes.removeAll(keepingCapacity: true) }
}
