import Foundation
import MigrationCore
import MigrationStream
import Synchronization

// Every test handler frames a section body as `be32 length, payload`, so the stream walker of
// the tests can skip bodies without knowing the handler.

func writeFramed(_ w: StreamWriter, _ payload: [UInt8]) throws {
    try w.writeBE32(UInt32(payload.count))
    try w.writeBytes(payload)
}

func readFramed(_ r: StreamReader, limit: Int = 64 << 20) throws -> [UInt8] {
    let at = r.offset
    let n = Int(try r.readBE32("a test body length"))
    guard n <= limit else { throw StreamError.lengthTooLarge(offset: at, field: "test body", length: UInt64(n), limit: UInt64(limit)) }
    return try r.readBytes(n, "a test body")
}

struct PayloadReader {
    let bytes: [UInt8]
    var position = 0

    mutating func be32() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw StreamError.badSectionBody(offset: position, idstr: "test", reason: "short") }
        defer { position += 4 }
        return bytes[position..<position + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func u8() throws -> UInt8 {
        guard position < bytes.count else { throw StreamError.badSectionBody(offset: position, idstr: "test", reason: "short") }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard position + n <= bytes.count else { throw StreamError.badSectionBody(offset: position, idstr: "test", reason: "short") }
        defer { position += n }
        return bytes[position..<position + n]
    }

    var atEnd: Bool { position == bytes.count }
}

func be32(_ v: Int) -> [UInt8] {
    [
        UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8),
        UInt8(truncatingIfNeeded: v)
    ]
}

/// What a handler saw of its own life, for the cleanup assertions.
struct Lifecycle: Sendable, Hashable {
    var saveCleanups: [Bool] = []
    var loadCleanups: [Bool] = []
}

// MARK: - RAM

/// A RAM-like live handler: pages in memory, a dirty bitmap, FULL-less like QEMU's "ram".
/// The guest dirties pages either from a workload thread (while the VM runs) or, for
/// deterministic tests, a fixed number of pages at each `saveIterate`.
final class RAMHandler: MigrationHandler {
    private struct State {
        var pages: [UInt8]
        var dirty: [Bool]
        var dirtyCount = 0
        var guestRunning = true
        var counter: UInt32 = 0
        var lifecycle = Lifecycle()
        var exactCalls = 0
        var workloadStop = false
        var workloadEnded = true
        var nextDirty = 0
        var iterateCalls = 0
    }

    let pageSize: Int
    let pageCount: Int
    let chunkPages: Int
    let dirtyPerIterate: Int
    /// Added to the estimate (not the exact figure), to see the exact query happen.
    let estimateBias: UInt64
    private let state: Mutex<State>
    /// Called with (clock time, body bytes) at each PART: the rate-limit test's ledger.
    let partLedger = Mutex<[(Duration, Int)]>([])
    let clock: (any MigrationClock)?

    init(
        pages: Int = 64, pageSize: Int = 4096, chunkPages: Int = 16, dirtyPerIterate: Int = 0,
        estimateBias: UInt64 = 0, seed: UInt8 = 1, clock: (any MigrationClock)? = nil
    ) {
        self.pageSize = pageSize
        self.pageCount = pages
        self.chunkPages = chunkPages
        self.dirtyPerIterate = dirtyPerIterate
        self.estimateBias = estimateBias
        self.clock = clock
        var content = [UInt8](repeating: 0, count: pages * pageSize)
        for i in content.indices { content[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed) &* 7 &+ i >> 12) }
        self.state = Mutex(State(pages: content, dirty: Array(repeating: false, count: pages)))
    }

    var isLive: Bool { true }
    var snapshot: [UInt8] { state.withLock { $0.pages } }
    var lifecycle: Lifecycle { state.withLock { $0.lifecycle } }
    var exactCalls: Int { state.withLock { $0.exactCalls } }
    var iterateCalls: Int { state.withLock { $0.iterateCalls } }

    func setGuestRunning(_ running: Bool) { state.withLock { $0.guestRunning = running } }

    private static func dirtyOne(_ s: inout State, page: Int, pageSize: Int) {
        s.counter &+= 1
        let base = page * pageSize
        for (k, b) in be32(Int(s.counter)).enumerated() { s.pages[base + k] = b }
        if !s.dirty[page] {
            s.dirty[page] = true
            s.dirtyCount += 1
        }
    }

    /// Starts a guest workload that dirties `pagesPerTick` pages every `tick` while it runs.
    func startWorkload(pagesPerTick: Int, tick: TimeInterval) {
        state.withLock {
            $0.workloadStop = false
            $0.workloadEnded = false
        }
        let thread = Thread { [self] in
            var page = 7
            while true {
                let stop = state.withLock { s -> Bool in
                    if s.workloadStop { return true }
                    if s.guestRunning {
                        for _ in 0..<pagesPerTick {
                            page = (page &* 1103 &+ 17) % pageCount
                            Self.dirtyOne(&s, page: page, pageSize: pageSize)
                        }
                    }
                    return false
                }
                if stop { break }
                Thread.sleep(forTimeInterval: tick)
            }
            state.withLock { $0.workloadEnded = true }
        }
        thread.start()
    }

    func stopWorkload() {
        state.withLock { $0.workloadStop = true }
        while !state.withLock({ $0.workloadEnded }) { Thread.sleep(forTimeInterval: 0.001) }
    }

    private func takeDirty(max: Int) -> [UInt8] {
        state.withLock { s in
            var payload: [UInt8] = []
            var sent = 0
            var p = 0
            while sent < max && s.dirtyCount > 0 && p < pageCount {
                if s.dirty[p] {
                    s.dirty[p] = false
                    s.dirtyCount -= 1
                    payload += be32(p)
                    payload += s.pages[p * pageSize..<(p + 1) * pageSize]
                    sent += 1
                }
                p += 1
            }
            return payload
        }
    }

    func saveSetup(to writer: StreamWriter, context: SaveContext) throws {
        state.withLock { s in
            s.dirty = Array(repeating: true, count: pageCount)
            s.dirtyCount = pageCount
        }
        try writeFramed(writer, be32(pageCount) + be32(pageSize))
    }

    func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult {
        state.withLock { $0.iterateCalls += 1 }
        let payload = takeDirty(max: chunkPages)
        // The guest keeps writing while the pass runs: pending never drops below this.
        if dirtyPerIterate > 0 {
            state.withLock { s in
                guard s.guestRunning else { return }
                for _ in 0..<dirtyPerIterate {
                    s.nextDirty = (s.nextDirty + 5) % pageCount
                    Self.dirtyOne(&s, page: s.nextDirty, pageSize: pageSize)
                }
            }
        }
        if let clock { partLedger.withLock { $0.append((clock.now, payload.count + 4)) } }
        try writeFramed(writer, payload)
        return state.withLock { $0.dirtyCount == 0 } ? .done : .more
    }

    func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        try writeFramed(writer, takeDirty(max: Int.max))
    }

    func pendingEstimate(context: SaveContext) -> PendingBytes {
        PendingBytes(mustPrecopy: UInt64(state.withLock { $0.dirtyCount } * pageSize) + estimateBias)
    }

    func pendingExact(context: SaveContext) throws -> PendingBytes {
        state.withLock { s in
            s.exactCalls += 1
            return PendingBytes(mustPrecopy: UInt64(s.dirtyCount * pageSize))
        }
    }

    func saveCleanup(succeeded: Bool) { state.withLock { $0.lifecycle.saveCleanups.append(succeeded) } }

    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        var p = PayloadReader(bytes: try readFramed(reader))
        if header.kind == .start {
            let count = Int(try p.be32())
            let size = Int(try p.be32())
            guard count == pageCount, size == pageSize else {
                throw StreamError.badSectionBody(offset: reader.offset, idstr: "ram", reason: "geometry \(count)×\(size)")
            }
            return
        }
        while !p.atEnd {
            let index = Int(try p.be32())
            guard index < pageCount else { throw StreamError.badSectionBody(offset: reader.offset, idstr: "ram", reason: "page \(index)") }
            let page = try p.take(pageSize)
            state.withLock { $0.pages.replaceSubrange(index * pageSize..<(index + 1) * pageSize, with: page) }
        }
    }

    func loadCleanup(succeeded: Bool) { state.withLock { $0.lifecycle.loadCleanups.append(succeeded) } }
}

// MARK: - Device with switchover-ack

/// A VFIO-like device: initial data in precopy (then INIT_DATA_SENT), stop-copy data in the
/// END section, config in a FULL section. On the destination it takes time to load its
/// initial data (through an injectable sleeper) and then acknowledges the switchover.
final class DeviceHandler: MigrationHandler {
    enum DeviceState: Sendable, Hashable { case running, preCopy, stopCopy, stopped, resuming, loaded, reset }

    struct Config: Sendable {
        var initialBytes = 48 << 10
        var chunk = 16 << 10
        var stopCopyBytes = 8 << 10
        var configBytes = 256
        var needsAck = true
        /// Destination: approve once the initial data is loaded.
        var approves = true
        /// Destination: time to load each DATA chunk, and the extra time before approving.
        var loadDelayPerChunk: Duration = .zero
        var ackDelay: Duration = .zero
        var fixedCostMicros: UInt64 = 0
        /// Destination: time to load the initial data once all of it is in, and the backlog (µs)
        /// reported until then (0: none).
        var initialLoadTime: Duration = .zero
        var backlogMicrosUntilInitialLoaded: UInt64 = 0
        var identity: String? = nil
        /// Source: after the first INIT_DATA_SENT, a second round of initial data (REINIT).
        var reinitBytes = 0
        var seed: UInt8 = 9
    }

    private enum Tag: UInt8 {
        case setup = 1
        case data = 2
        case initDataSent = 3
        case reinit = 4
        case config = 6
    }

    private struct State {
        var device: DeviceState = .running
        var initialSent = 0
        var initDataSentSent = false
        var reinitStarted = false
        var reinitSent = 0
        var secondInitSent = false
        var received: [UInt8] = []
        var initialLoaded = false
        var lifecycle = Lifecycle()
    }

    let config: Config
    let name: String
    let log: EventLog
    let sleeper: @Sendable (Duration) -> Void
    /// Source: called before sending the last REINIT chunk (a test gate).
    let beforeLastReinitChunk: (@Sendable () -> Void)?
    private let state = Mutex(State())

    init(
        name: String, config: Config, log: EventLog, sleeper: @escaping @Sendable (Duration) -> Void = realSleeper,
        beforeLastReinitChunk: (@Sendable () -> Void)? = nil
    ) {
        self.name = name
        self.config = config
        self.log = log
        self.sleeper = sleeper
        self.beforeLastReinitChunk = beforeLastReinitChunk
        let total = config.initialBytes + config.reinitBytes + config.stopCopyBytes + config.configBytes
        var data = [UInt8](repeating: 0, count: total)
        for i in data.indices { data[i] = UInt8(truncatingIfNeeded: i &* 13 &+ Int(config.seed)) }
        self.expectedData = data
    }

    var isLive: Bool { true }
    var hasFullState: Bool { true }
    var preflightIdentity: String? { config.identity }
    var device: DeviceState { state.withLock { $0.device } }
    var received: [UInt8] { state.withLock { $0.received } }
    var lifecycle: Lifecycle { state.withLock { $0.lifecycle } }

    /// The bytes the source device holds: initial data, reinit data, stop-copy data, config.
    let expectedData: [UInt8]

    private func item(_ tag: Tag, _ data: ArraySlice<UInt8> = []) -> [UInt8] {
        [tag.rawValue] + be32(data.count) + data
    }

    func saveSetup(to writer: StreamWriter, context: SaveContext) throws {
        state.withLock { $0.device = context.vmRunning ? .preCopy : .stopped }
        try writeFramed(writer, item(.setup))
    }

    func isActiveIterate(context: SaveContext) -> Bool { state.withLock { $0.device == .preCopy } }

    func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult {
        let data = expectedData
        var gate = false
        let (payload, result) = state.withLock { s -> ([UInt8], IterationResult) in
            var payload: [UInt8] = []
            if s.initialSent < config.initialBytes {
                let n = min(config.chunk, config.initialBytes - s.initialSent)
                payload += item(.data, data[s.initialSent..<s.initialSent + n])
                s.initialSent += n
                if s.initialSent == config.initialBytes && context.switchoverAckEnabled && config.needsAck && !s.initDataSentSent {
                    payload += item(.initDataSent)
                    s.initDataSentSent = true
                }
                return (payload, .more)
            }
            if s.reinitSent < config.reinitBytes {
                if !s.reinitStarted {
                    payload += item(.reinit)
                    s.reinitStarted = true
                }
                let n = min(config.chunk, config.reinitBytes - s.reinitSent)
                if s.reinitSent + n == config.reinitBytes { gate = true }
                let base = config.initialBytes + s.reinitSent
                payload += item(.data, data[base..<base + n])
                s.reinitSent += n
                if s.reinitSent == config.reinitBytes && context.switchoverAckEnabled && config.needsAck { payload += item(.initDataSent) }
                return (payload, .more)
            }
            return ([], .done)
        }
        if gate { beforeLastReinitChunk?() }
        try writeFramed(writer, payload)
        return result
    }

    func pendingEstimate(context: SaveContext) -> PendingBytes {
        state.withLock { s in
            PendingBytes(mustPrecopy: UInt64(config.initialBytes - s.initialSent + config.reinitBytes - s.reinitSent))
        }
    }

    func pendingExact(context: SaveContext) throws -> PendingBytes {
        let precopy = pendingEstimate(context: context).mustPrecopy
        return PendingBytes(mustPrecopy: precopy + UInt64(config.stopCopyBytes))
    }

    func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        let data = expectedData
        let (payload, base) = state.withLock { s -> ([UInt8], Int) in
            s.device = .stopCopy
            // Whatever precopy did not send goes now, then the stop-copy data.
            let start = s.initialSent + s.reinitSent
            return (Array(data[start..<config.initialBytes + config.reinitBytes + config.stopCopyBytes]), start)
        }
        _ = base
        try writeFramed(writer, item(.data, payload[...]))
    }

    func saveState(to writer: StreamWriter, context: SaveContext) throws {
        let data = expectedData
        let start = config.initialBytes + config.reinitBytes + config.stopCopyBytes
        try writeFramed(writer, item(.config, data[start...]))
    }

    func saveCleanup(succeeded: Bool) {
        state.withLock { s in
            s.lifecycle.saveCleanups.append(succeeded)
            // A failed migration puts the device back to running; a successful one stops it.
            s.device = succeeded ? .stopped : .running
        }
    }

    // Destination.

    func loadSetup(context: LoadContext) throws { state.withLock { $0.device = .resuming } }

    func switchoverAckNeeded(context: LoadContext) -> Bool { config.needsAck }

    func expectedFinalLoadCostMicros(context: LoadContext) -> UInt64 { config.fixedCostMicros }

    func loadBacklog(context: LoadContext) -> LoadBacklog {
        guard config.backlogMicrosUntilInitialLoaded > 0 else { return .none }
        return state.withLock { s in
            s.initialLoaded ? .none : LoadBacklog(bytes: UInt64(s.received.count), expectedMicros: config.backlogMicrosUntilInitialLoaded)
        }
    }

    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        var p = PayloadReader(bytes: try readFramed(reader))
        while !p.atEnd {
            let tag = try p.u8()
            let n = Int(try p.be32())
            let data = try p.take(n)
            switch Tag(rawValue: tag) {
            case .setup: break
            case .data:
                let initialIn = state.withLock { s in
                    s.received += data
                    return !s.initialLoaded && s.received.count >= config.initialBytes
                }
                if config.loadDelayPerChunk > .zero { sleeper(config.loadDelayPerChunk) }
                if initialIn {
                    if config.initialLoadTime > .zero { sleeper(config.initialLoadTime) }
                    state.withLock { $0.initialLoaded = true }
                    log.append("\(name) initial data loaded")
                }
            case .initDataSent:
                if config.ackDelay > .zero { sleeper(config.ackDelay) }
                if config.approves {
                    log.append("\(name) approve")
                    try context.approveSwitchover()
                }
            case .reinit:
                log.append("\(name) revoke")
                try context.revokeSwitchover()
            case .config:
                state.withLock { s in
                    s.received += data
                    s.device = .loaded
                }
            case nil:
                throw StreamError.badSectionBody(offset: reader.offset, idstr: name, reason: "unknown tag \(tag)")
            }
        }
    }

    func loadCleanup(succeeded: Bool) {
        state.withLock { s in
            s.lifecycle.loadCleanups.append(succeeded)
            if !succeeded { s.device = .reset }
        }
    }
}

// MARK: - FULL only

/// A plain non-iterative device: one FULL section at completion.
final class FullStateHandler: MigrationHandler {
    private struct State {
        var data: [UInt8]
        var lifecycle = Lifecycle()
    }

    private let state: Mutex<State>

    init(bytes: Int = 512, seed: UInt8 = 3) {
        state = Mutex(State(data: (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }))
    }

    var data: [UInt8] { state.withLock { $0.data } }
    var lifecycle: Lifecycle { state.withLock { $0.lifecycle } }

    func saveState(to writer: StreamWriter, context: SaveContext) throws {
        try writeFramed(writer, state.withLock { $0.data })
    }

    func saveCleanup(succeeded: Bool) { state.withLock { $0.lifecycle.saveCleanups.append(succeeded) } }

    func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        let bytes = try readFramed(reader)
        state.withLock { $0.data = bytes }
    }

    func loadCleanup(succeeded: Bool) { state.withLock { $0.lifecycle.loadCleanups.append(succeeded) } }
}
