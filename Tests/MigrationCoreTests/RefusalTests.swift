import Foundation
import MigrationCore
import MigrationStream
import TestSupport
import Testing

/// The destination refuses what it cannot load, clearly, and the source survives it.
@Suite struct RefusalTests {
    static func noExtensions() -> MigrationParameters {
        var p = MigrationParameters()
        p.extensions = false
        return p
    }

    @Test func aMachineTypeMismatchIsAClearSetupError() async throws {
        let s = try Scenario()
        let (result, incoming) = try await s.migrate(destinationConfiguration: MachineConfiguration(machineType: "pc-i440fx-7.2"))
        let error = try #require(incoming.error as? MigrationError)
        let failure = error
        guard failure.code == .incompatible else {
            Issue.record("expected a setup error, got \(error)")
            return
        }
        #expect(failure.phase == .header)
        #expect(failure.message.contains("\"pc-q35-7.2\"") && failure.message.contains("\"pc-i440fx-7.2\""))
        #expect(result.error is MigrationError)
        s.expectSourceIntact()
        s.expectDestinationCleanedUp()
    }

    @Test func aDestinationMissingAHandlerRefusesTheSection() async throws {
        let s = try Scenario(device: DeviceHandler.Config(needsAck: false))
        s.destinationRegistry.unregister(idstr: deviceID, instanceID: 0)
        let (result, incoming) = try await s.migrate(Self.noExtensions())
        let error = try #require(incoming.error as? MigrationError)
        let failure = error
        guard failure.code == .incompatible else {
            Issue.record("expected a load error, got \(error)")
            return
        }
        #expect(failure.message.contains("Unknown section or instance") && failure.message.contains(deviceID))
        #expect(failure.section?.kind == .start && failure.offset != nil)
        let sourceError = try #require(result.error as? MigrationError)
        if sourceError.code == .destinationFailed {} else { Issue.record("source: \(sourceError)") }
        s.expectSourceIntact()
    }

    @Test func aDestinationMissingAHandlerFailsThePreflightBeforeAnyStateMoves() async throws {
        let s = try Scenario(device: DeviceHandler.Config(needsAck: false))
        s.destinationRegistry.unregister(idstr: deviceID, instanceID: 0)
        let (result, incoming) = try await s.migrate()
        for error in [result.error, incoming.error] {
            let e = try #require(error as? MigrationError)
            let failure = e
            guard failure.code == .incompatible else {
                Issue.record("expected a pre-flight error, got \(e)")
                continue
            }
            #expect(failure.message.contains("missing handler") && failure.message.contains(deviceID))
        }
        #expect(s.sourceDevice?.lifecycle.saveCleanups == [false])
        #expect(s.destinationRAM.lifecycle.loadCleanups == [false])
        #expect(s.destinationRAM.snapshot != s.sourceRAM.snapshot, "no state moved")
        s.expectSourceIntact()
    }

    @Test func aNewerStreamVersionIsRefused() async throws {
        let s = try Scenario()
        let newer = RAMHandler()
        let older = RAMHandler()
        try s.sourceRegistry.register(newer, idstr: "virtio-mem", versionID: 3)
        try s.destinationRegistry.register(older, idstr: "virtio-mem", versionID: 2)
        let (result, incoming) = try await s.migrate(Self.noExtensions())
        let error = try #require(incoming.error as? MigrationError)
        let failure = error
        guard failure.code == .incompatible else {
            Issue.record("expected a load error, got \(error)")
            return
        }
        #expect(failure.message.contains("version 3 is newer than this destination's 2"))
        #expect(result.error is MigrationError)
        s.expectSourceIntact()

        // An older stream version loads.
        let t = try Scenario()
        try t.sourceRegistry.register(RAMHandler(pages: 4), idstr: "virtio-mem", versionID: 1)
        try t.destinationRegistry.register(RAMHandler(pages: 4), idstr: "virtio-mem", versionID: 2)
        let (ok, loaded) = try await t.migrate(Self.noExtensions())
        _ = try ok.get()
        _ = try loaded.get()
    }

    @Test func thePreflightReportsVersionAndDeviceDifferences() async throws {
        let s = try Scenario(
            device: DeviceHandler.Config(needsAck: false, identity: "15b3:101e fw 28.39.1002"),
            destinationDevice: DeviceHandler.Config(needsAck: false, identity: "15b3:101e fw 28.41.1000"))
        try s.sourceRegistry.register(RAMHandler(pages: 4), idstr: "virtio-mem", versionID: 3)
        try s.destinationRegistry.register(RAMHandler(pages: 4), idstr: "virtio-mem", versionID: 2)
        let (result, incoming) = try await s.migrate()
        let sourceError = try #require(result.error as? MigrationError)
        let failure = sourceError
        guard failure.code == .incompatible else {
            Issue.record("expected a pre-flight error, got \(sourceError)")
            return
        }
        #expect(failure.phase == .preflight)
        #expect(failure.message.contains("fw 28.39.1002") && failure.message.contains("fw 28.41.1000"))
        #expect(failure.message.contains("version 3") && failure.message.contains("up to 2"))
        guard try #require(incoming.error as? MigrationError).code == .incompatible else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        s.expectSourceIntact()
    }

    @Test func aDestinationWithoutExtensionsRefusesTheHello() async throws {
        let s = try Scenario()
        let (result, incoming) = try await s.migrate(MigrationParameters(), destination: Self.noExtensions())
        let error = try #require(incoming.error as? MigrationError)
        #expect(error.message.contains("SWITCHOVER_HELLO") == true)
        #expect(result.error is MigrationError)
        s.expectSourceIntact()
    }

    @Test func switchoverAckWithoutReturnPathIsInvalid() async throws {
        let s = try Scenario()
        var p = MigrationParameters()
        p.switchoverAck = true
        p.returnPath = false
        let (result, _) = try await s.migrate(p)
        guard try #require(result.error as? MigrationError).code == .invalidParameters else {
            Issue.record("\(String(describing: result))")
            return
        }
        s.expectSourceIntact()
    }
}

@Suite struct TimeoutAndCancelTests {
    @Test func aDestinationThatStopsReadingTripsTheStallTimeout() async throws {
        // 1 MiB of RAM into a socket nobody reads: the source's write blocks.
        let s = try Scenario(ram: { RAMHandler(pages: 256) })
        var p = MigrationParameters()
        p.extensions = false
        p.returnPath = false
        p.stallTimeout = .milliseconds(200)
        let (a, b) = try DescriptorConnection.socketPair()
        let original = s.sourceRAM.snapshot
        let result = await capture { try await s.source(p).run(over: a) }
        let error = try #require(result.error as? MigrationError)
        let failure = error
        guard failure.code == .stallTimeout else {
            Issue.record("expected a stall timeout, got \(error)")
            return
        }
        #expect(failure.phase == .setup || failure.phase == .iterating)
        s.expectSourceIntact(originalRAM: original)
        b.close()
    }

    @Test func aSourceThatGoesSilentTripsTheDestinationsStallTimeout() async throws {
        let s = try Scenario()
        var p = MigrationParameters()
        p.stallTimeout = .milliseconds(100)
        p.switchoverTimeout = .milliseconds(100)
        let (a, b) = try DescriptorConnection.socketPair()
        // Only the header: then nothing.
        let sink = MemoryByteSink()
        let writer = StreamWriter(sink: sink)
        try writer.writeFileHeader()
        try writer.flush()
        try sink.bytes.withUnsafeBytes { try a.write($0) }
        let result = await capture { try await s.destination(p).run(over: b) }
        let failure = try #require(result.error as? MigrationError)
        guard failure.code == .stallTimeout else {
            Issue.record("\(String(describing: result))")
            return
        }
        #expect(failure.phase == .header)
        s.expectDestinationCleanedUp()
        a.close()
    }

    @Test func cancellingTheDestinationFailsBothSidesAndTheSourceKeepsRunning() async throws {
        let s = try Scenario(ram: { RAMHandler(pages: 64, chunkPages: 4, dirtyPerIterate: 4) })
        var p = MigrationParameters()
        p.downtimeLimit = .milliseconds(0)
        p.switchoverBandwidth = 1
        let source = s.source(p)
        let destination = s.destination(p)
        let canceller = Task {
            while s.sourceRAM.iterateCalls < 20 { try? await Task.sleep(for: .milliseconds(2)) }
            destination.cancel()
        }
        let (a, b) = try DescriptorConnection.socketPair()
        let (result, incoming) = await runBoth(source: source, over: a, destination: destination, over: b)
        await canceller.value
        let failure = try #require(incoming.error as? MigrationError)
        guard failure.code == .cancelled else {
            Issue.record("\(String(describing: incoming))")
            return
        }
        #expect(failure.phase == .loading)
        #expect(result.error is MigrationError)
        s.expectSourceIntact()
        s.expectDestinationCleanedUp()
    }

    @Test func cancellingTheAwaitingTaskCancelsTheSource() async throws {
        let s = try Scenario(ram: { RAMHandler(pages: 64, chunkPages: 4, dirtyPerIterate: 4) })
        var p = MigrationParameters()
        p.downtimeLimit = .milliseconds(0)
        p.switchoverBandwidth = 1
        let source = s.source(p)
        let (a, b) = try DescriptorConnection.socketPair()
        let destinationTask = Task { await capture { try await s.destination(p).run(over: b) } }
        let sourceTask = Task { try await source.run(over: a) }
        while s.sourceRAM.iterateCalls < 20 { try await Task.sleep(for: .milliseconds(2)) }
        sourceTask.cancel()
        let result = await sourceTask.result
        guard try #require(result.error as? MigrationError).code == .cancelled else {
            Issue.record("\(String(describing: result))")
            return
        }
        _ = await destinationTask.value
        s.expectSourceIntact()
    }
}
