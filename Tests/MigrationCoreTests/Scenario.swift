import Foundation
import MigrationCore
import MigrationStream
import Testing

let machine = MachineConfiguration(machineType: "pc-q35-7.2")
let deviceID = "0000:00:05.0/vfio"

/// A source and a destination with the three test handlers, connected in one process.
final class Scenario: Sendable {
    let log = EventLog()
    let sourceRegistry = HandlerRegistry()
    let destinationRegistry = HandlerRegistry()
    let sourceRAM: RAMHandler
    let destinationRAM: RAMHandler
    let sourceDevice: DeviceHandler?
    let destinationDevice: DeviceHandler?
    let sourceFull = FullStateHandler(seed: 3)
    let destinationFull = FullStateHandler(seed: 99)
    let sourceVM: TestVM
    let destinationVM: TestVM

    init(
        ram: @Sendable () -> RAMHandler = { RAMHandler() }, device: DeviceHandler.Config? = nil,
        destinationDevice: DeviceHandler.Config? = nil, guestRunning: Bool = true,
        sleeper: @escaping @Sendable (Duration) -> Void = realSleeper,
        beforeLastReinitChunk: (@Sendable () -> Void)? = nil
    ) throws {
        let sourceRAM = ram()
        self.sourceRAM = sourceRAM
        destinationRAM = RAMHandler(pages: sourceRAM.pageCount, pageSize: sourceRAM.pageSize, seed: 200)
        sourceRAM.setGuestRunning(guestRunning)
        sourceVM = TestVM(
            name: "source", running: guestRunning, log: log,
            onStop: { sourceRAM.setGuestRunning(false) }, onResume: { sourceRAM.setGuestRunning(true) })
        destinationVM = TestVM(name: "destination", running: false, log: log)
        try sourceRegistry.register(sourceRAM, idstr: "ram", instanceID: 0, versionID: 4)
        try destinationRegistry.register(destinationRAM, idstr: "ram", instanceID: 0, versionID: 4)
        if let device {
            let s = DeviceHandler(
                name: "source device", config: device, log: log, sleeper: sleeper,
                beforeLastReinitChunk: beforeLastReinitChunk)
            let d = DeviceHandler(name: "destination device", config: destinationDevice ?? device, log: log, sleeper: sleeper)
            try sourceRegistry.register(s, idstr: deviceID, versionID: 1)
            try destinationRegistry.register(d, idstr: deviceID, versionID: 1)
            sourceDevice = s
            self.destinationDevice = d
        } else {
            sourceDevice = nil
            self.destinationDevice = nil
        }
        try sourceRegistry.register(sourceFull, idstr: "timer", versionID: 2)
        try destinationRegistry.register(destinationFull, idstr: "timer", versionID: 2)
    }

    func source(_ parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock()) -> MigrationSource
    {
        MigrationSource(registry: sourceRegistry, vm: sourceVM, configuration: machine, parameters: parameters, clock: clock)
    }

    func destination(
        _ parameters: MigrationParameters = MigrationParameters(), clock: any MigrationClock = MonotonicClock(),
        configuration: MachineConfiguration = machine
    ) -> MigrationDestination {
        MigrationDestination(
            registry: destinationRegistry, vm: destinationVM, configuration: configuration,
            parameters: parameters, clock: clock)
    }

    /// Migrates over a socketpair (optionally through a fault or a recorder).
    func migrate(
        _ parameters: MigrationParameters = MigrationParameters(), destination destinationParameters: MigrationParameters? = nil,
        clock: any MigrationClock = MonotonicClock(), destinationConfiguration: MachineConfiguration = machine,
        wrap: (DescriptorConnection) -> any MigrationConnection = { $0 }
    )
        async throws -> (source: Result<MigrationStatistics, any Error>, destination: Result<IncomingStatistics, any Error>)
    {
        let (a, b) = try DescriptorConnection.socketPair()
        let source = self.source(parameters, clock: clock)
        let destination = self.destination(destinationParameters ?? parameters, clock: clock, configuration: destinationConfiguration)
        let r = await runBoth(source: source, over: wrap(a), destination: destination, over: b)
        return (r.0, r.1)
    }

    /// The state the destination ends with equals the source's.
    func expectIdenticalState(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(destinationRAM.snapshot == sourceRAM.snapshot, "RAM differs", sourceLocation: sourceLocation)
        #expect(destinationFull.data == sourceFull.data, "FULL state differs", sourceLocation: sourceLocation)
        if let s = sourceDevice, let d = destinationDevice {
            #expect(d.received == s.expectedData, "device data differs", sourceLocation: sourceLocation)
        }
    }

    /// After a failure: the source guest runs, every source handler cleaned up once with
    /// false, device back to running, RAM untouched by the migration.
    func expectSourceIntact(originalRAM: [UInt8]? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(sourceVM.isRunning, "the source guest must run", sourceLocation: sourceLocation)
        #expect(sourceRAM.lifecycle.saveCleanups == [false], sourceLocation: sourceLocation)
        #expect(sourceFull.lifecycle.saveCleanups == [false], sourceLocation: sourceLocation)
        if let d = sourceDevice {
            #expect(d.lifecycle.saveCleanups == [false], sourceLocation: sourceLocation)
            #expect(d.device == .running, sourceLocation: sourceLocation)
        }
        if let originalRAM { #expect(sourceRAM.snapshot == originalRAM, "source RAM changed", sourceLocation: sourceLocation) }
    }

    func expectDestinationCleanedUp(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(destinationRAM.lifecycle.loadCleanups == [false], sourceLocation: sourceLocation)
        #expect(destinationFull.lifecycle.loadCleanups == [false], sourceLocation: sourceLocation)
        if let d = destinationDevice {
            #expect(d.lifecycle.loadCleanups == [false], sourceLocation: sourceLocation)
        }
        #expect(!destinationVM.isRunning, sourceLocation: sourceLocation)
    }
}
