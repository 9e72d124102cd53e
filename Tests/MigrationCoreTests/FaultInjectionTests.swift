import Foundation
import MigrationCore
import MigrationStream
import Testing

/// Cuts the connection, then corrupts one byte, at every record boundary of a reference
/// migration: the source always ends with its guest running and its state intact, both sides
/// clean up, and both report a typed error naming the phase.
@Suite struct FaultInjectionTests {
    /// Deterministic: no dirtying, no ack, a fixed switchover bandwidth, no load-time term.
    static var parameters: MigrationParameters {
        var p = MigrationParameters()
        p.switchoverBandwidth = 40_000  // threshold 12 kB: three passes, then the switchover
        p.countDestinationLoadTime = false
        p.stallTimeout = .seconds(10)
        return p
    }

    static func scenario() throws -> Scenario {
        try Scenario(
            ram: { RAMHandler(pages: 40, chunkPages: 16) },
            device: DeviceHandler.Config(initialBytes: 24 << 10, chunk: 12 << 10, stopCopyBytes: 4 << 10, needsAck: false))
    }

    static func referenceBoundaries() async throws -> [Boundary] {
        let s = try scenario()
        let recorder = Box<RecordingConnection>()
        let (source, destination) = try await s.migrate(parameters) { c in
            let r = RecordingConnection(c)
            recorder.value = r
            return r
        }
        _ = try source.get()
        _ = try destination.get()
        s.expectIdenticalState()
        return try recordBoundaries(try #require(recorder.value).bytes)
    }

    /// The destination's phase when the stream stops at `boundary`.
    static func destinationPhase(_ boundary: Boundary) -> MigrationPhase {
        boundary.what == "header" || boundary.what == "configuration" ? .header : .loading
    }

    @Test func theReferenceMigrationHasEveryKindOfRecord() async throws {
        let kinds = Set(try await Self.referenceBoundaries().map { $0.what.split(separator: " ").first.map(String.init) ?? "" })
        #expect(
            kinds.isSuperset(of: [
                "header", "configuration", "OPEN_RETURN_PATH", "PING", "SWITCHOVER_HELLO",
                "SWITCHOVER_PREFLIGHT", "start", "part", "end", "full", "EOF", "VMDESCRIPTION"
            ]))
    }

    @Test func cuttingTheConnectionAtEveryBoundaryLeavesTheSourceRunning() async throws {
        let boundaries = try await Self.referenceBoundaries()
        for boundary in boundaries {
            let s = try Self.scenario()
            let original = s.sourceRAM.snapshot
            let (source, destination) = try await s.migrate(Self.parameters) { c in
                FaultInjectingConnection(wrapping: c, fault: .cut(atOffset: boundary.offset))
            }
            let sourceError = try #require(source.error as? MigrationError, "source at \(boundary)")
            let destinationError = try #require(destination.error as? MigrationError, "destination at \(boundary)")
            #expect(sourceError.phase == boundary.sourcePhase, "source at \(boundary): \(sourceError)")
            #expect(destinationError.phase == Self.destinationPhase(boundary), "destination at \(boundary): \(destinationError)")
            let cut = sourceError.cause as? TransportError
            #expect(cut == .injectedCut(offset: boundary.offset), "source at \(boundary): \(sourceError)")
            s.expectSourceIntact(originalRAM: original)
            s.expectDestinationCleanedUp()
            // A guest the source never stopped is never "resumed"; one it stopped is.
            #expect(s.sourceVM.stops == s.sourceVM.resumes)
        }
    }

    @Test func corruptingTheFirstByteOfEveryRecordFailsBothSidesCleanly() async throws {
        let boundaries = try await Self.referenceBoundaries()
        for boundary in boundaries {
            let s = try Self.scenario()
            let original = s.sourceRAM.snapshot
            let (source, destination) = try await s.migrate(Self.parameters) { c in
                FaultInjectingConnection(wrapping: c, fault: .corrupt(atOffset: boundary.offset))
            }
            let sourceError = try #require(source.error as? MigrationError, "source at \(boundary)")
            let destinationError = try #require(destination.error as? MigrationError, "destination at \(boundary)")
            #expect(destinationError.phase == Self.destinationPhase(boundary), "destination at \(boundary): \(destinationError)")
            #expect(destinationError.cause is StreamError, "destination at \(boundary): \(destinationError)")
            #expect(sourceError.phase != .idle && sourceError.phase != .completed, "source at \(boundary): \(sourceError)")
            s.expectSourceIntact(originalRAM: original)
            s.expectDestinationCleanedUp()
            #expect(s.sourceVM.stops == s.sourceVM.resumes)
        }
    }
}
