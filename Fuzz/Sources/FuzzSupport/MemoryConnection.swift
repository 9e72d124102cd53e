import Dispatch
import MigrationCore
import MigrationStream
import Synchronization

/// A migration connection whose reads come from fixed bytes (handed out in pieces of
/// `pieceSize`, 0 = as much as asked) and whose writes are counted and dropped. Reads never
/// block: at the end of the bytes the peer has closed, so no fuzz input can make a target wait.
public final class MemoryConnection: MigrationConnection, Sendable {
    private struct State {
        var position = 0
        var shutDown = false
        var written = 0
    }

    private let bytes: [UInt8]
    private let pieceSize: Int
    private let state = Mutex(State())
    public let supportsReturnPath: Bool

    public init(_ bytes: [UInt8], pieceSize: Int = 0, supportsReturnPath: Bool = true) {
        self.bytes = bytes
        self.pieceSize = pieceSize
        self.supportsReturnPath = supportsReturnPath
    }

    /// Bytes written so far.
    public var written: Int { state.withLock { $0.written } }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try state.withLock { s in
            if s.shutDown { throw TransportError.shutDown }
            var n = min(buffer.count, bytes.count - s.position)
            if pieceSize > 0 { n = min(n, pieceSize) }
            guard n > 0 else { return 0 }
            bytes.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[s.position..<s.position + n]))
            }
            s.position += n
            return n
        }
    }

    public func write(_ data: UnsafeRawBufferPointer) throws {
        try state.withLock { s in
            if s.shutDown { throw TransportError.shutDown }
            s.written += data.count
        }
    }

    public func shutdown() { state.withLock { $0.shutDown = true } }
    public func close() {}
}

/// Runs `body` on the concurrency pool and blocks this (libFuzzer's) thread until it ends.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let value = await body()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return result.withLock { $0 }!
}
