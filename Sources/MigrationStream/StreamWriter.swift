/// A buffered writer of a migration stream. Handlers write their section bodies through it;
/// the engine writes headers, footers and commands.
///
/// Small writes gather in a buffer (32 KiB, QEMU's `IO_BUF_SIZE`); a large write flushes the
/// buffer and goes to the sink directly. Not thread-safe: one writer per channel thread.
public final class StreamWriter {
    private let sink: ByteSink
    private var buffer: [UInt8]
    private let capacity: Int

    /// Every byte handed to the writer so far, buffered or not (the stream offset).
    public private(set) var bytesWritten = 0

    public init(sink: ByteSink, bufferSize: Int = 32 << 10) {
        self.sink = sink
        self.capacity = max(bufferSize, 64)
        self.buffer = []
        buffer.reserveCapacity(capacity)
    }

    /// Hands every buffered byte to the sink.
    public func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try sink.write($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private func reserve(_ n: Int) throws {
        if buffer.count + n > capacity { try flush() }
    }

    public func writeU8(_ v: UInt8) throws {
        try reserve(1)
        buffer.append(v)
        bytesWritten += 1
    }

    public func writeBE16(_ v: UInt16) throws {
        try reserve(2)
        buffer.append(UInt8(v >> 8))
        buffer.append(UInt8(truncatingIfNeeded: v))
        bytesWritten += 2
    }

    public func writeBE32(_ v: UInt32) throws {
        try reserve(4)
        for shift in stride(from: 24, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
        bytesWritten += 4
    }

    public func writeBE64(_ v: UInt64) throws {
        try reserve(8)
        for shift in stride(from: 56, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
        bytesWritten += 8
    }

    public func writeBytes(_ bytes: UnsafeRawBufferPointer) throws {
        if bytes.count >= capacity / 2 {
            try flush()
            try sink.write(bytes)
        } else {
            try reserve(bytes.count)
            buffer.append(contentsOf: bytes)
        }
        bytesWritten += bytes.count
    }

    public func writeBytes(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeBytes($0) }
    }

    /// A QEMU counted string; refuses strings longer than 255 bytes.
    public func writeCountedString(_ s: String) throws {
        let utf8 = Array(s.utf8)
        guard utf8.count <= 255 else {
            throw StreamError.invalidField(offset: bytesWritten, field: "counted string", reason: "\(utf8.count) bytes, at most 255")
        }
        try writeU8(UInt8(utf8.count))
        try writeBytes(utf8)
    }
}
