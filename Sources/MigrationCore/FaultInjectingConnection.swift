import MigrationStream
import Synchronization

/// Wraps a source's connection to break it on purpose, for tests: cut it when the stream
/// reaches a byte offset (the bytes before arrive, then both directions are shut down), or
/// flip the bits of the byte at an offset.
public final class FaultInjectingConnection: MigrationConnection {
    /// What to do to the outgoing stream.
    public enum Fault: Sendable, Hashable {
        /// Deliver bytes `0..<offset`, then shut the connection down and fail the write.
        case cut(atOffset: Int)
        /// XOR the byte at `offset` with `mask`.
        case corrupt(atOffset: Int, mask: UInt8 = 0xFF)
    }

    private let base: any MigrationConnection
    /// The fault this wrapper injects.
    public let fault: Fault
    private let written = Mutex(0)

    /// Wraps `base` (usually the source's end of a connection).
    public init(wrapping base: any MigrationConnection, fault: Fault) { (self.base, self.fault) = (base, fault) }

    /// Bytes that went through so far.
    public var bytesWritten: Int { written.withLock { $0 } }

    public var supportsReturnPath: Bool { base.supportsReturnPath }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try base.read(into: buffer)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        let start = written.withLock { $0 }
        let end = start + bytes.count
        switch fault {
        case .cut(let offset):
            if end <= offset {
                try base.write(bytes)
                written.withLock { $0 = end }
                return
            }
            if start < offset {
                try base.write(UnsafeRawBufferPointer(rebasing: bytes[0..<(offset - start)]))
                written.withLock { $0 = offset }
            }
            base.shutdown()
            throw TransportError.injectedCut(offset: offset)
        case .corrupt(let offset, let mask):
            if offset >= start && offset < end {
                var copy = Array(bytes)
                copy[offset - start] ^= mask
                try copy.withUnsafeBytes { try base.write($0) }
            } else {
                try base.write(bytes)
            }
            written.withLock { $0 = end }
        }
    }

    public func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    public func shutdown() { base.shutdown() }
    public func close() { base.close() }
}
