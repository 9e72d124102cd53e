import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import Testing

@Suite struct SwitchoverAckTests {
    static var ackParameters: MigrationParameters {
        var p = MigrationParameters()
        p.switchoverAck = true
        p.stallTimeout = .seconds(120)
        return p
    }

    @Test func theAcknowledgementGatesTheSwitchover() async throws {
        // The destination device takes a while to load its initial data before approving.
        let s = try Scenario(device: DeviceHandler.Config(ackDelay: .milliseconds(150)))
        let source = s.source(Self.ackParameters)
        let destination = s.destination(Self.ackParameters)
        let states = Mutex<[AckState]>([])
        let watcher = Task {
            for await event in source.progress {
                if let d = event.handlers.first(where: { $0.identity.idstr == deviceID }) {
                    states.withLock { $0.append(d.ackState) }
                }
            }
        }
        let (a, b) = try DescriptorConnection.socketPair()
        let (result, incoming) = await runBoth(source: source, over: a, destination: destination, over: b)
        await watcher.value
        let stats = try result.get()
        _ = try incoming.get()
        let approve = try #require(s.log.index(of: "destination device approve"))
        let stop = try #require(s.log.index(of: "source stopVM"))
        #expect(approve < stop, "the source stopped the guest before the acknowledgement: \(s.log.all)")
        #expect(s.log.count(of: "destination device approve") == 1)
        #expect(stats.handlers.first { $0.identity.idstr == deviceID }?.ackState == .acknowledged)
        #expect(stats.handlers.first { $0.identity.idstr == "ram" }?.ackState == .notNeeded)
        #expect(states.withLock { $0.contains(.pending) && $0.last == .acknowledged })
        s.expectIdenticalState()
    }

    @Test func aQEMUPeerGetsOneAcknowledgementAndNoExtensions() async throws {
        let s = try Scenario(device: DeviceHandler.Config(ackDelay: .milliseconds(50)))
        var p = Self.ackParameters
        p.extensions = false
        let (result, incoming) = try await s.migrate(p)
        let stats = try result.get()
        #expect(try !incoming.get().usedExtensions)
        #expect(try #require(s.log.index(of: "destination device approve")) < (try #require(s.log.index(of: "source stopVM"))))
        // Without ACK_STATE the source knows only the total.
        #expect(stats.handlers.first { $0.identity.idstr == deviceID }?.ackState == .unknown)
        s.expectIdenticalState()
    }

    @Test func aPausedGuestDoesNotWaitForTheAcknowledgement() async throws {
        let s = try Scenario(device: DeviceHandler.Config(approves: false), guestRunning: false)
        let (result, incoming) = try await s.migrate(Self.ackParameters)
        _ = try result.get()
        _ = try incoming.get()
        #expect(s.log.index(of: "destination device approve") == nil)
        #expect(s.sourceVM.stops == 0, "a paused guest is not stopped again")
        s.expectIdenticalState()
    }

    @Test func noHandlerNeedingAnAcknowledgementMeansImmediateAck() async throws {
        let s = try Scenario(device: DeviceHandler.Config(needsAck: false))
        let (result, incoming) = try await s.migrate(Self.ackParameters)
        _ = try result.get()
        _ = try incoming.get()
        s.expectIdenticalState()
    }

    @Test func aRevokedAcknowledgementMakesTheSourceWaitAgain() async throws {
        // Round one: initial data, INIT_DATA_SENT → approve. Round two: REINIT → revoke, more
        // data, INIT_DATA_SENT → approve again (after a load delay). The last round-two chunk
        // is held until the source has seen the revocation, so the order is deterministic.
        let sourceBox = Box<MigrationSource>()
        let gate: @Sendable () -> Void = {
            for _ in 0..<2000 {
                if sourceBox.value?.acknowledgement.handlers.values.contains(.revoked) == true { return }
                Thread.sleep(forTimeInterval: 0.005)
            }
        }
        let config = DeviceHandler.Config(
            initialBytes: 32 << 10, chunk: 16 << 10, stopCopyBytes: 1 << 10,
            ackDelay: .milliseconds(100), reinitBytes: 32 << 10)
        let s = try Scenario(ram: { RAMHandler(pages: 16) }, device: config, beforeLastReinitChunk: gate)
        var p = Self.ackParameters
        p.switchoverBandwidth = 10_000  // threshold 3 kB: only the 1 kB stop-copy data fits
        let source = s.source(p)
        sourceBox.value = source
        // The gate reaches the source through the box and the source holds the gate (through its
        // handler): break the cycle at the end, or LeakSanitizer reports the whole scenario.
        defer { sourceBox.value = nil }
        let states = Mutex<[AckState]>([])
        let watcher = Task {
            for await event in source.progress {
                if let d = event.handlers.first(where: { $0.identity.idstr == deviceID }) { states.withLock { $0.append(d.ackState) } }
            }
        }
        let (a, b) = try DescriptorConnection.socketPair()
        let (result, incoming) = await runBoth(source: source, over: a, destination: s.destination(p), over: b)
        await watcher.value
        _ = try result.get()
        _ = try incoming.get()
        let events = s.log.all
        let approvals = events.indices.filter { events[$0] == "destination device approve" }
        let revoke = try #require(events.firstIndex(of: "destination device revoke"))
        let stop = try #require(events.firstIndex(of: "source stopVM"))
        #expect(approvals.count == 2 && approvals[0] < revoke && revoke < approvals[1], "\(events)")
        #expect(approvals[1] < stop, "the source switched over on a revoked acknowledgement: \(events)")
        #expect(states.withLock { $0.contains(.revoked) })
        s.expectIdenticalState()
    }

    @Test func theSwitchoverTimeoutEndsAWaitThatNeverEnds() async throws {
        let s = try Scenario(device: DeviceHandler.Config(approves: false))
        var p = Self.ackParameters
        p.switchoverBandwidth = 1 << 20
        p.switchoverTimeout = .seconds(2)
        let clock = VirtualClock()
        let original = s.sourceRAM.snapshot
        let (result, incoming) = try await s.migrate(p, clock: clock)
        let error = try #require(result.error as? MigrationError)
        let failure = error
        guard failure.code == .switchoverAckTimeout else {
            Issue.record("expected a switchover timeout, got \(error)")
            return
        }
        #expect(failure.phase == .iterating)
        #expect(s.sourceVM.stops == 0)
        s.expectSourceIntact(originalRAM: original)
        #expect(incoming.error is MigrationError)
        s.expectDestinationCleanedUp()
    }

    @Test func approvingWithoutSwitchoverAckIsRefused() async throws {
        // The source sends INIT_DATA_SENT (its ack is on), the destination's is off: QEMU's
        // "Received INIT_DATA_SENT but switchover ack is not used".
        let s = try Scenario(device: DeviceHandler.Config())
        var off = Self.ackParameters
        off.switchoverAck = false
        let (result, incoming) = try await s.migrate(Self.ackParameters, destination: off)
        let error = try #require(incoming.error as? MigrationError)
        #expect(error.phase == .loading)
        #expect((error.cause as? SwitchoverAckError) == .disabled(HandlerIdentity(idstr: deviceID, instanceID: 0, versionID: 1)))
        #expect(result.error is MigrationError)
        s.expectSourceIntact()
    }
}
