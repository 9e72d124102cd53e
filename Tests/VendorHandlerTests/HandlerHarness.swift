import Foundation
import MigrationCore
import MigrationStream
import Testing
import VFIOPCIHandler

/// Contexts that record what handlers ask of the engine.
final class RecordingContext: SaveContext, LoadContext, @unchecked Sendable {
    let identity: HandlerIdentity
    let switchoverAckEnabled: Bool
    let multifdTransfer: Bool
    private let lock = NSLock()
    private var running = true
    private var approved = 0
    private var revoked = 0

    init(identity: HandlerIdentity, ack: Bool, multifd: Bool = false) {
        self.identity = identity
        self.switchoverAckEnabled = ack
        self.multifdTransfer = multifd
    }

    var vmRunning: Bool {
        get { lock.withLock { running } }
        set { lock.withLock { running = newValue } }
    }

    var approvals: Int { lock.withLock { approved } }

    private var chosen = MigrationParameters()
    /// What the source's hooks see (extensions on by default, as MigrationParameters).
    var parameters: MigrationParameters {
        get { lock.withLock { chosen } }
        set { lock.withLock { chosen = newValue } }
    }

    var revocations: Int { lock.withLock { revoked } }

    func approveSwitchover() throws { lock.withLock { approved += 1 } }
    func revokeSwitchover() throws { lock.withLock { revoked += 1 } }
}

/// Drives one source handler and one destination handler by hand, as the engine would,
/// through an in-memory stream of framed sections.
struct HandlerHarness {
    var sectionID: UInt32 = 7
    var maxParts = 64

    struct Outcome {
        var stream: [UInt8]
        var parts: Int
        var sourceContext: RecordingContext
        var destinationContext: RecordingContext
    }

    /// Source side only: the framed sections, with the VM stopped (run-state hooks) before END.
    func save(_ handler: VFIOPCIHandler, ack: Bool, vmRunning: Bool = true) throws -> (
        bytes: [UInt8], parts: Int, context: RecordingContext
    ) {
        let ctx = RecordingContext(identity: handler.identity, ack: ack)
        ctx.vmRunning = vmRunning
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        let id = handler.identity
        func section(_ kind: SectionKind, _ body: () throws -> Void) throws {
            try w.writeSectionHeader(
                SectionHeader(kind: kind, sectionID: sectionID, idstr: id.idstr, instanceID: id.instanceID, versionID: id.versionID))
            try body()
            try w.writeFooter(sectionID: sectionID)
        }
        var parts = 0
        do {
            try handler.savePrepare(context: ctx)
            try section(.start) { try handler.saveSetup(to: w, context: ctx) }
            var result = IterationResult.more
            while handler.isActiveIterate(context: ctx), parts < maxParts, result == .more || (ack && !handler.statistics.initDataSent) {
                try section(.part) { result = try handler.saveIterate(to: w, context: ctx) }
                parts += 1
            }
            // The guest stops as VMRunState stops it: the P2P step, then STOP_COPY.
            ctx.vmRunning = false
            try handler.prepareRunStateChange(.stop(.switchover))
            try handler.runStateChanged(.stop(.switchover))
            try section(.end) { try handler.saveComplete(to: w, context: ctx) }
            try section(.full) { try handler.saveState(to: w, context: ctx) }
            try w.flush()
        } catch {
            handler.saveCleanup(succeeded: false)
            throw error
        }
        handler.saveCleanup(succeeded: true)
        return (sink.bytes, parts, ctx)
    }

    /// Destination side only: loads every framed section, completes, then starts the guest.
    func load(_ bytes: [UInt8], into handler: VFIOPCIHandler, ack: Bool, pieces: [Int] = []) throws -> RecordingContext {
        let ctx = RecordingContext(identity: handler.identity, ack: ack)
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: pieces))
        do {
            try handler.loadSetup(context: ctx)
            while try !reader.isAtEnd() {
                guard case .section(let header) = try reader.readRecord() else {
                    throw StreamError.unexpectedRecord(offset: reader.offset, found: "not a section", expected: "a section")
                }
                try handler.loadState(from: reader, header: header, context: ctx)
                try reader.readFooter(sectionID: header.sectionID)
            }
            try handler.loadComplete(context: ctx)
            try handler.prepareRunStateChange(.start(.incomingMigration))
            try handler.runStateChanged(.start(.incomingMigration))
        } catch {
            handler.loadCleanup(succeeded: false)
            throw error
        }
        handler.loadCleanup(succeeded: true)
        return ctx
    }

    func migrate(_ source: VFIOPCIHandler, _ destination: VFIOPCIHandler, ack: Bool, pieces: [Int] = []) throws -> Outcome {
        let saved = try save(source, ack: ack)
        let dctx = try load(saved.bytes, into: destination, ack: ack, pieces: pieces)
        return Outcome(stream: saved.bytes, parts: saved.parts, sourceContext: saved.context, destinationContext: dctx)
    }
}

/// Occurrences of an 8-byte big-endian tag in a stream.
func count(_ tag: VFIOSectionTag, in bytes: [UInt8]) -> Int {
    let needle = tag.bytes
    guard bytes.count >= 8 else { return 0 }
    return (0...(bytes.count - 8)).filter { i in (0..<8).allSatisfy { bytes[i + $0] == needle[$0] } }.count
}
