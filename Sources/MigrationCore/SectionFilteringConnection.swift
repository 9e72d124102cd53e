import MigrationStream

/// A live incoming stream cut down to the sections a destination has handlers for: what
/// ``SelectedFileTransport`` does for a file, for a socket, where no VMDESCRIPTION comes first.
///
/// A thread of its own walks the base connection's bytes with a ``/MigrationStream/StreamWalker`` (RAM and VFIO
/// bodies parsed, any other FULL body found by its footer followed by a plausible record, as
/// `switchover inspect` finds them without a description) and queues, byte for byte, the file
/// header and configuration, the kept sections, every command and EOF; everything after EOF
/// (QEMU's VMDESCRIPTION) is passed through as it comes. The engine reads the queue; its
/// return-path writes go straight to the base connection. The queue holds at most
/// ``maxQueued`` bytes (the walker waits for room), so a fast source cannot make it grow without
/// bound. A record the walker cannot follow ends the stream with its ``/MigrationStream/StreamError``.
///
/// For QEMU → Switchover live (docs/qemu-peer-test.md): QEMU's `ram` and device vmstates (timer,
/// cpu, apic, …) are skipped; its VFIO sections reach the generic handler.
public final class SectionFilteringConnection: MigrationConnection, CustomStringConvertible {
    /// The most bytes queued for the engine.
    public static let maxQueued = 16 << 20
    /// The most idstrs ``skippedBytes`` names; further ones count under "(others)" (a hostile
    /// source could invent a new idstr for every record).
    public static let maxSkippedNames = 1024

    private struct State {
        var queue: [UInt8] = []
        var head = 0
        /// The walk is over: the base reached its end (nil) or failed.
        var ended = false
        var failure: (any Error)?
        var shutDown = false
        var readTimeout: Duration?
        var skipped: [String: Int] = [:]
        var keptSections: Set<String> = []
        var queued: Int { queue.count - head }
    }

    private let base: any MigrationConnection
    private let state = Monitor(State())

    /// - Parameters:
    ///   - base: the accepted connection (a socket: it carries the return path).
    ///   - keep: whether a section (idstr, instance id) goes to the engine.
    public init(base: any MigrationConnection, keep: @escaping @Sendable (_ idstr: String, _ instanceID: UInt32) -> Bool) {
        self.base = base
        startThread(name: "switchover-section-filter") { [base, state] in
            Self.pump(base: base, state: state, keep: keep)
        }
    }

    public var description: String { "\(base) (sections filtered)" }
    public var supportsReturnPath: Bool { base.supportsReturnPath }

    /// Bytes of skipped sections so far, by idstr.
    public var skippedBytes: [String: Int] { state.withLock { $0.skipped } }
    /// The idstrs of the sections passed on so far.
    public var keptSections: Set<String> { state.withLock { $0.keptSections } }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !buffer.isEmpty else { return 0 }
        let timeout = state.withLock { $0.readTimeout }
        let outcome: Result<Int, any Error>? = state.wait(timeout: timeout) { s -> Result<Int, any Error>? in
            if s.shutDown { return .failure(TransportError.shutDown) }
            if s.queued > 0 {
                let n = min(buffer.count, s.queued)
                s.queue.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[s.head..<(s.head + n)])) }
                s.head += n
                if s.head > 1 << 20 {
                    s.queue.removeFirst(s.head)
                    s.head = 0
                }
                return .success(n)
            }
            if s.ended { return s.failure.map { .failure($0) } ?? .success(0) }
            return nil
        }
        // The walker may wait for room.
        state.update { _ in }
        guard let outcome else { throw TransportError.timedOut(operation: "read \(description)", after: timeout ?? .zero) }
        return try outcome.get()
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws { try base.write(bytes) }

    public func setTimeouts(read: Duration?, write: Duration?) {
        state.withLock { $0.readTimeout = read }
        base.setTimeouts(read: nil, write: write)
    }

    public func shutdown() {
        state.update { $0.shutDown = true }
        base.shutdown()
    }

    public func close() {
        shutdown()
        base.close()
    }

    // MARK: The walk

    /// Reads the base through the walker and keeps a copy of every byte read, so that a record
    /// can be passed on as it came.
    private final class TeeSource: ByteSource {
        let base: any MigrationConnection
        /// Bytes read and not yet passed on or dropped, from stream offset `start`.
        var captured: [UInt8] = []
        var start = 0

        init(base: any MigrationConnection) { self.base = base }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = try base.read(into: buffer)
            captured += UnsafeRawBufferPointer(rebasing: buffer[..<n])
            return n
        }

        /// The captured bytes up to stream offset `end`, dropped from the copy.
        func take(upTo end: Int) -> ArraySlice<UInt8> {
            let count = max(0, min(end - start, captured.count))
            let piece = captured[..<count]
            captured.removeFirst(count)
            start += count
            return piece
        }
    }

    private static func pump(
        base: any MigrationConnection, state: Monitor<State>, keep: @Sendable (String, UInt32) -> Bool
    ) {
        let tee = TeeSource(base: base)
        func enqueue(_ bytes: ArraySlice<UInt8>) throws {
            guard !bytes.isEmpty else { return }
            let shutDown = state.wait(timeout: nil) { s -> Bool? in
                if s.shutDown { return true }
                return s.queued + bytes.count <= maxQueued || s.queued == 0 ? false : nil
            }
            if shutDown == true { throw TransportError.shutDown }
            state.update { $0.queue += bytes }
        }
        do {
            let walker = try StreamWalker(source: tee, bufferSize: 64 << 10)
            try walker.readPreamble()
            try enqueue(tee.take(upTo: walker.reader.offset))
            while let record = try walker.next() {
                let end = walker.reader.offset
                if record.kind == .eof {
                    try enqueue(tee.take(upTo: record.offset + 1))
                    break
                }
                if let idstr = record.idstr, record.sectionID != nil, !keep(idstr, record.instanceID ?? 0) {
                    let dropped = tee.take(upTo: end).count
                    state.withLock { s in
                        let key = s.skipped[idstr] != nil || s.skipped.count < maxSkippedNames ? idstr : "(others)"
                        s.skipped[key, default: 0] += dropped
                    }
                    continue
                }
                if let idstr = record.idstr { state.withLock { _ = $0.keptSections.insert(idstr) } }
                try enqueue(tee.take(upTo: end))
            }
            // After EOF (QEMU's VMDESCRIPTION, if any): as it comes, until the base ends.
            try enqueue(tee.take(upTo: Int.max))
            var chunk = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let n = try chunk.withUnsafeMutableBytes { try base.read(into: $0) }
                if n == 0 { break }
                try enqueue(chunk[..<n])
            }
            state.update { $0.ended = true }
        } catch {
            state.update {
                $0.ended = true
                $0.failure = error
            }
        }
    }
}
