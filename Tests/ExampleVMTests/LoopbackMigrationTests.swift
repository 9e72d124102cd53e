import ExampleVM
import MigrationCore
import Synchronization
import Testing

/// Both ends of a migration in this process over TCP loopback, with small simulated devices.
@Suite struct LoopbackMigrationTests {
    static let configuration = ExampleMachineConfiguration(
        memoryBytes: 4 << 20, dirtyPagesPerSecond: 200,
        devices: [
            DeviceSpec(kind: .mlx5, stateBytes: 2 << 20, initialBytes: 1 << 20, loadCost: .milliseconds(20)),
            DeviceSpec(kind: .vfioPCI, stateBytes: 256 << 10, initialBytes: 64 << 10),
            DeviceSpec(kind: .mtty, ports: 3)
        ])

    @Test(arguments: [(false, 0), (true, 0), (true, 3)])
    func everyDeviceArrivesByteIdentical(switchoverAck: Bool, multifdChannels: Int) async throws {
        var parameters = MigrationParameters()
        parameters.switchoverAck = switchoverAck
        parameters.multifdChannels = multifdChannels
        parameters.downtimeLimit = .seconds(2)
        // Both ends share this process's 2 cooperative threads with every other test: under
        // load the destination's task can start long after the source began waiting for it.
        parameters.stallTimeout = .seconds(120)
        let result = try await LoopbackMigration.run(Self.configuration, parameters: parameters, timeout: .seconds(180))
        #expect(result.verification.verified, "\(result.verification.checks.filter { !$0.matches })")
        #expect(result.verification.checks.map(\.name) == ["ram", "0000:00:01.0", "0000:00:02.0", "0000:00:03.0"])
        // The destination's content started from other seeds: identical means the bytes moved.
        #expect(result.sourceDigests.devices.allSatisfy { $0.stream != nil })
        #expect(result.statistics.downtime != nil)
        #expect(result.statistics.handlers.map(\.identity.idstr) == ["ram", "0000:00:01.0/vfio", "0000:00:02.0/vfio", "0000:00:03.0/vfio"])
        #expect(result.statistics.multifdChannels == multifdChannels)
        #expect((result.statistics.multifdBytes > 0) == (multifdChannels > 0))
        let acks = result.statistics.handlers.dropFirst().map(\.ackState)
        #expect(acks.allSatisfy { $0 == (switchoverAck ? .acknowledged : .notNeeded) })
    }

    @Test func theDestinationStartsWithOtherContent() throws {
        let source = try ExampleMachine(Self.configuration, role: .source)
        let destination = try ExampleMachine(Self.configuration, role: .destination)
        defer {
            source.shutdown()
            destination.shutdown()
        }
        #expect(source.digests.ram != destination.digests.ram)
        #expect(source.registry.entries.map(\.identity) == destination.registry.entries.map(\.identity))
        #expect(!destination.isRunning)
        let mismatch = source.digests.verify(destination: destination.digests)
        #expect(!mismatch.verified)
    }

    @Test func aMigrationThatCannotConvergeIsCancelledAtTheTimeout() async throws {
        // 8 MiB left for the stop-copy phase at a 1 MiB/s switchover bandwidth cannot fit 10 ms.
        let configuration = ExampleMachineConfiguration(
            memoryBytes: 1 << 20, dirtyPagesPerSecond: 0,
            devices: [DeviceSpec(kind: .vfioPCI, stateBytes: 8 << 20, initialBytes: 0)])
        var parameters = MigrationParameters()
        parameters.downtimeLimit = .milliseconds(10)
        parameters.switchoverBandwidth = 1 << 20
        // Nothing moves while it iterates: only the run's timeout may end it, not the stall check.
        parameters.stallTimeout = .seconds(600)
        // The run's timeout is real time. Whatever it is, every run must end cancelled by it (the
        // migration cannot converge), saying so. On a loaded machine it can fire before the
        // source iterates, which says nothing about convergence: such a run is repeated with a
        // timeout four times longer, so the outcome does not depend on scheduling.
        var limit = Duration.milliseconds(500)
        var iterated = false
        for _ in 0..<5 where !iterated {
            let phases = Mutex<[MigrationPhase]>([])
            let error = try await #require(throws: LoopbackMigrationError.self) {
                try await LoopbackMigration.run(configuration, parameters: parameters, timeout: limit) { event in
                    phases.withLock { $0.append(event.phase) }
                }
            }
            // Only the timeout cancels here.
            #expect((error.source as? MigrationError)?.code == .cancelled, "the run did not end at its timeout: \(error)")
            if error.timedOut != nil { #expect("\(error)".contains("did not converge"), "\(error)") }
            iterated = phases.withLock { $0.contains(.iterating) }
            limit *= 4
        }
        #expect(iterated, "the timeout never fired after the source began iterating (last limit \(limit / 4))")
    }
}
