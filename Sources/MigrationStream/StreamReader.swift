/// A buffered, pull-style reader of a migration stream.
///
/// It never holds more than its buffer (64 KiB by default) of the input: section bodies are
/// read by whoever owns the section (a handler's `loadState`), a few bytes at a time or
/// streamed in chunks through ``read(into:)``. Every read names what it expects, so a
/// truncated input fails with ``StreamError/truncated(offset:expected:)`` at the right offset.
///
/// Not thread-safe: one reader belongs to one thread (the migration thread).
public final class StreamReader {
    private let source: ByteSource
    private let storage: UnsafeMutableRawBufferPointer
    private var head = 0
    private var tail = 0
    private var sourceEnded = false
    private var consumedBeforeHead: Int

    /// Section ids bound by START and FULL sections, so PART and END headers can be resolved.
    var boundSections: [UInt32: SectionBinding] = [:]

    /// The number of bytes consumed from the stream so far (its current offset).
    public var offset: Int { consumedBeforeHead + head }

    /// - Parameters:
    ///   - source: where the bytes come from.
    ///   - bufferSize: read-ahead buffer; also the largest ``peek(_:)``.
    ///   - startOffset: the offset of the first byte `source` returns (for error messages).
    public init(source: ByteSource, bufferSize: Int = 64 << 10, startOffset: Int = 0) {
        self.source = source
        self.storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bufferSize, 64), alignment: 8)
        self.consumedBeforeHead = startOffset
    }

    deinit { storage.deallocate() }

    /// Bytes buffered and not yet consumed.
    public var bufferedCount: Int { tail - head }

    /// Makes at least `count` bytes available (count ≤ buffer size). False at the end of input.
    private func fill(_ count: Int) throws -> Bool {
        if tail - head >= count { return true }
        precondition(count <= storage.count, "fill beyond the reader's buffer")
        if head > 0 {
            let n = tail - head
            if n > 0 { storage.baseAddress!.copyMemory(from: storage.baseAddress! + head, byteCount: n) }
            consumedBeforeHead += head
            head = 0
            tail = n
        }
        while tail < count {
            if sourceEnded { return false }
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: storage[tail...]))
            if n == 0 {
                sourceEnded = true
                return false
            }
            tail += n
        }
        return true
    }

    /// True when every byte of the input has been consumed.
    public func isAtEnd() throws -> Bool {
        try !fill(1)
    }

    /// The next `count` bytes without consuming them, or nil when fewer remain.
    /// `count` must not exceed the buffer size.
    public func peek(_ count: Int) throws -> [UInt8]? {
        guard try fill(count) else { return nil }
        return Array(UnsafeRawBufferPointer(rebasing: storage[head..<head + count]))
    }

    /// The largest number of bytes the reader can look ahead (its buffer size).
    public var lookaheadCapacity: Int { storage.count }

    /// Calls `body` with the buffered, not yet consumed bytes after making at least `count` of
    /// them available (`count` is clamped to ``lookaheadCapacity``). Fewer than `count` bytes
    /// are passed only when the input has ended. Nothing is consumed; the pointer is valid only
    /// inside `body`. Scanners use this to look for a pattern without copying.
    public func withBufferedBytes<R>(atLeast count: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        _ = try fill(min(max(count, 0), storage.count))
        return try body(UnsafeRawBufferPointer(rebasing: storage[head..<tail]))
    }

    /// The next byte without consuming it, or nil at the end of input.
    public func peekU8() throws -> UInt8? {
        guard try fill(1) else { return nil }
        return storage[head]
    }

    @inline(__always)
    private func require(_ count: Int, _ what: @autoclosure () -> String) throws {
        if try !fill(count) { throw StreamError.truncated(offset: offset, expected: what()) }
    }

    public func readU8(_ what: @autoclosure () -> String = "a byte") throws -> UInt8 {
        try require(1, what())
        defer { head += 1 }
        return storage[head]
    }

    public func readBE16(_ what: @autoclosure () -> String = "a be16") throws -> UInt16 {
        try require(2, what())
        defer { head += 2 }
        return UInt16(storage[head]) << 8 | UInt16(storage[head + 1])
    }

    public func readBE32(_ what: @autoclosure () -> String = "a be32") throws -> UInt32 { try readBigEndian(what()) }

    public func readBE64(_ what: @autoclosure () -> String = "a be64") throws -> UInt64 { try readBigEndian(what()) }

    private func readBigEndian<T: FixedWidthInteger & UnsignedInteger>(_ what: @autoclosure () -> String) throws -> T {
        let size = MemoryLayout<T>.size
        try require(size, what())
        var v: T = 0
        for i in 0..<size { v = v << 8 | T(storage[head + i]) }
        head += size
        return v
    }

    /// What ``readBytes(_:_:)`` allocates ahead of the bytes it has read.
    public static let readAheadAllocation = 1 << 20

    /// Reads exactly `count` bytes. The caller bounds `count` before calling; memory grows
    /// with the bytes that actually arrive (at most ``readAheadAllocation`` ahead of them), so
    /// a peer that announces a large length and sends nothing makes us hold nothing.
    public func readBytes(_ count: Int, _ what: @autoclosure () -> String = "bytes") throws -> [UInt8] {
        precondition(count >= 0, "readBytes with a negative count")
        if count <= Self.readAheadAllocation {
            var out = [UInt8](repeating: 0, count: count)
            try out.withUnsafeMutableBytes { try readExactly(into: $0, what()) }
            return out
        }
        var out = [UInt8](repeating: 0, count: Self.readAheadAllocation)
        var done = 0
        while done < count {
            if done == out.count { out.append(contentsOf: repeatElement(0, count: min(count - done, Self.readAheadAllocation))) }
            let n = try out.withUnsafeMutableBytes { try read(into: UnsafeMutableRawBufferPointer(rebasing: $0[done...])) }
            if n == 0 { throw StreamError.truncated(offset: offset, expected: "\(what()) (\(count - done) more bytes)") }
            done += n
        }
        return out
    }

    /// Fills `buffer` completely or throws ``StreamError/truncated(offset:expected:)``.
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer, _ what: @autoclosure () -> String = "bytes") throws {
        var done = 0
        while done < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 {
                throw StreamError.truncated(offset: offset, expected: "\(what()) (\(buffer.count - done) more bytes)")
            }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes; 0 only at the end of input. Large reads bypass the
    /// buffer once it is drained, so streaming a chunk costs one copy.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        if tail == head {
            if buffer.count >= storage.count / 2 && !sourceEnded {
                let n = try source.read(into: buffer)
                if n == 0 { sourceEnded = true }
                consumedBeforeHead += n
                return n
            }
            guard try fill(1) else { return 0 }
        }
        let n = min(buffer.count, tail - head)
        buffer.baseAddress!.copyMemory(from: storage.baseAddress! + head, byteCount: n)
        head += n
        return n
    }

    /// Consumes and discards `count` bytes.
    public func skip(_ count: UInt64, _ what: @autoclosure () -> String = "bytes") throws {
        var left = count
        while left > 0 {
            if tail == head, try !fill(1) {
                throw StreamError.truncated(offset: offset, expected: "\(what()) (\(left) more bytes)")
            }
            let n = Int(min(left, UInt64(tail - head)))
            head += n
            left -= UInt64(n)
        }
    }

    /// A QEMU counted string: one length byte, then that many bytes (no NUL).
    public func readCountedString(_ what: @autoclosure () -> String = "a counted string") throws -> String {
        let len = Int(try readU8("the length of \(what())"))
        let bytes = try readBytes(len, what())
        return String(decoding: bytes, as: UTF8.self)
    }
}
