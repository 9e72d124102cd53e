import Foundation
import MigrationCore
import MigrationStream
import Synchronization
import TestSupport
import Testing

/// What a hostile peer can make each end of a migration do: never crash it, never make it hold
/// more than its budget, never keep it waiting past a deadline.
@Suite struct HostilePeerEngineTests {
    /// A LOAD_REPORT whose fixed cost is 2^64-1 µs: the source's prediction converted it to an
    /// Int64 and trapped ("arithmetic overflow"), killing the side that holds the running guest.
    /// Now the prediction is clamped: the switchover is held (the downtime cannot fit) and the
    /// guest keeps running until the migration is cancelled.
    @Test func absurdLoadFiguresHoldTheSwitchoverInsteadOfCrashingTheSource() async throws {
        var config = DeviceHandler.Config(fixedCostMicros: .max)
        config.initialBytes = 16 << 10
        var p = MigrationParameters()
        p.switchoverAck = true
        p.switchoverBandwidth = 1_000_000
        try await DecisionTests.expectSwitchoverHeld(device: config, p)
    }

    /// A destination that answers with LOAD_REPORTs, ACK_STATEs and LOAD_BACKLOGs for handlers the source does
    /// not migrate (each would be a new entry in the source's state): refused at the first.
    @Test(arguments: [
        ReturnPathMessage.loadReport(LoadReport(idstr: "evil", instanceID: 7, bytesLoaded: 1, loadMicros: 1, fixedCostMicros: 1)),
        ReturnPathMessage.ackState(idstr: "evil", instanceID: 7, acknowledged: false),
        ReturnPathMessage.loadBacklog(LoadBacklogReport(idstr: "evil", instanceID: 7, bytes: 1, expectedMicros: 1, loadedThrough: 1))
    ])
    func returnPathMessagesForUnknownHandlersFailTheSourceCleanly(message: ReturnPathMessage) async throws {
        let s = try Scenario()
        let source = s.source()
        let (a, b) = try DescriptorConnection.socketPair()
        // The fake destination: drains what the source sends and answers with `message`.
        let drain = Thread {
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while (try? buffer.withUnsafeMutableBytes { try b.read(into: $0) }) ?? 0 > 0 {}
        }
        drain.start()
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        for _ in 0..<1000 { try w.writeReturnPathMessage(.pong(1)) }  // bounded: only the last 16 are kept
        try w.writeReturnPathMessage(message)
        try w.flush()
        try sink.bytes.withUnsafeBytes { try b.write($0) }
        let result = await capture { try await source.run(over: a) }
        b.shutdown()
        let error = try #require(result.error as? MigrationError)
        let failure = error
        guard failure.code == .returnPath else {
            Issue.record("expected a return-path failure, got \(error)")
            return
        }
        #expect("\(failure)".contains("\"evil\" instance 7, which this source does not migrate"))
        #expect(s.sourceVM.stops == 0)
        s.expectSourceIntact()
    }

    /// A peer that trickles bytes (one every 50 ms) to keep the main stream alive is cut off
    /// once a window of waiting has passed with less than the minimum receive rate.
    @Test(.timeLimit(.minutes(1)))
    func aTricklingSourceIsCutOff() async throws {
        let s = try Scenario()
        var p = MigrationParameters()
        p.stallTimeout = .seconds(1)
        p.minimumReceiveRate = 1024
        let destination = s.destination(p)
        let (a, b) = try DescriptorConnection.socketPair()
        let stop = Atomic(false)
        let trickler = Thread {
            // A valid header, then a configuration one byte at a time.
            let header: [UInt8] = [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x07, 0, 0, 0, 0x10]
            for byte in header + [UInt8](repeating: 0x41, count: 200) {
                if stop.load(ordering: .relaxed) { return }
                guard (try? [byte].withUnsafeBytes { try a.write($0) }) != nil else { return }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        trickler.start()
        let result = await capture { try await destination.run(over: b) }
        stop.store(true, ordering: .relaxed)
        a.shutdown()
        let error = try #require(result.error as? MigrationError)
        let failure = error
        guard failure.code == .peerTooSlow else {
            Issue.record("expected the too-slow timeout, got \(error)")
            return
        }
        #expect(failure.message.contains("minimumReceiveRate"))
        #expect("\(error.code)" == "too-slow peer")
        s.expectDestinationCleanedUp()
    }
}

/// Multifd channels from a hostile source: bounded in bytes and in time.
@Suite struct HostileMultifdTests {
    /// A connection that drops the packet with `index` and ignores close and shutdown: the
    /// source believes it sent everything and closed the channel, the destination sees an open
    /// channel that never delivers the rest.
    final class WithholdingConnection: MigrationConnection {
        private let base: PacketFilterConnection
        let raw: DescriptorConnection
        init(_ base: DescriptorConnection, dropping index: UInt32) {
            self.raw = base
            self.base = PacketFilterConnection(base, [.drop(index)])
        }
        var supportsReturnPath: Bool { base.supportsReturnPath }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int { try base.read(into: buffer) }
        func write(_ bytes: UnsafeRawBufferPointer) throws { try base.write(bytes) }
        func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
        func shutdown() {}
        func close() {}
    }

    /// What a source can make the destination hold on the channels is a byte budget: a flood
    /// whose first packet never comes (so nothing can load) is refused once it reaches it.
    @Test func aFloodIsRefusedAtTheByteBudget() async throws {
        let s = try MultifdScenario(devices: 1)
        var destination = MultifdScenario.parameters(channels: 2)
        destination.multifdMaxPacketSize = 8 << 10
        destination.multifdQueueBudget = 16 << 10
        let (source, incoming) = await s.migrate(MultifdScenario.parameters(channels: 2), destination: destination) { index, c in
            index >= 1 ? PacketFilterConnection(c, [.drop(0)]) as any MigrationConnection : c
        }
        guard case .budgetExceeded(_, let device, let size, let queued, let budget)? = MultifdTests.multifdError(incoming) else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(device.idstr == MultifdScenario.deviceID(0) && budget == 16 << 10)
        #expect(queued + size > budget && queued <= budget)
        #expect("\(try #require(incoming.error))".contains("multifdQueueBudget"))
        #expect(source.error != nil)
        #expect(s.sourceIntact && s.destinationCleanedUp)
    }

    /// A budget smaller than the largest packet could never admit it: refused up front.
    @Test func aBudgetBelowThePacketSizeIsRefused() async throws {
        let s = try MultifdScenario(devices: 1)
        var p = MultifdScenario.parameters(channels: 1)
        p.multifdQueueBudget = p.multifdMaxPacketSize - 1
        let (_, incoming) = await s.migrate(MultifdScenario.parameters(channels: 1), destination: p)
        guard let text = incoming.error as? MigrationError, text.code == .invalidParameters else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(text.message.contains("multifdQueueBudget"))
    }

    /// After the main stream's EOF, a channel that stays open without the device's config-state
    /// packet hung the destination until cancelled; now the drain deadline (no progress for the
    /// stall timeout) fails it, naming the device.
    @Test(.timeLimit(.minutes(1)))
    func aChannelKeptOpenWithoutItsLastPacketMeetsTheDrainDeadline() async throws {
        let s = try MultifdScenario(devices: 1)
        let source = MultifdScenario.parameters(channels: 1)
        var destination = source
        destination.stallTimeout = .seconds(2)
        let configIndex = UInt32(s.sourceDevices[0].data.count / s.sourceDevices[0].chunk)  // the last packet
        let kept = Mutex<[DescriptorConnection]>([])
        let (_, incoming) = await s.migrate(source, destination: destination) { index, c in
            guard index == 1 else { return c }
            kept.withLock { $0.append(c) }
            return WithholdingConnection(c, dropping: configIndex)
        }
        for c in kept.withLock({ $0 }) {
            c.shutdown()
            c.close()
        }
        guard case .drainTimedOut(let device, _, let reason)? = MultifdTests.multifdError(incoming) else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(device?.idstr == MultifdScenario.deviceID(0))
        #expect(reason.contains("stallTimeout"))
        #expect(s.destinationCleanedUp)
    }
}
