import Foundation
import MigrationCore
import MigrationStream
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

extension VendorConformance {
    /// What ``checkRunStateOrder(devices:multifd:sourceLocation:)`` saw.
    public struct RunStateOutcome: Sendable {
        public var sources: [SimulatedVFIODevice]
        public var destinations: [SimulatedVFIODevice]
        /// The source devices with the config states their handlers saved from.
        public var sourceDevices: [MigratedDevice]
        /// The destination devices with the config states their handlers restored into.
        public var destinationDevices: [MigratedDevice]
        public var sourceVM: TestVM
        public var destinationVM: TestVM
        public var sourceResult: Result<MigrationStatistics, any Error>
        public var destinationResult: Result<IncomingStatistics, any Error>
        /// The destination's run state, to start the guest the migration left stopped.
        public var destinationRunState: VMRunState
    }

    /// Migrates `devices` devices of the module at once, destination guest left stopped
    /// (`MigrationParameters.resumeOnCompletion` off).
    public func migrateSeveral(devices: Int, multifd: Bool, allowDevicesWithoutP2P: Bool = false) async throws -> RunStateOutcome {
        let sourceRegistry = HandlerRegistry()
        let destinationRegistry = HandlerRegistry()
        var sources: [MigratedDevice] = []
        var destinations: [MigratedDevice] = []
        for n in 0..<devices {
            var config = device
            config.name = String(format: "0000:7%01x:00.%d", n / 8, n % 8)
            config.seed = device.seed &+ UInt64(n)
            var destinationConfig = config
            destinationConfig.seed = config.seed &+ 0x5EED
            let source = try MigratedDevice(config)
            let destination = try MigratedDevice(destinationConfig)
            try Self.programAsGuest(source.device, seed: config.seed)
            let idstr = VFIOPCIHandler.idstr(for: config.name)
            try sourceRegistry.register(module.makeHandler(source.device, source.config), idstr: idstr, instanceID: 0, versionID: 1)
            try destinationRegistry.register(
                module.makeHandler(destination.device, destination.config), idstr: idstr, instanceID: 0, versionID: 1)
            sources.append(source)
            destinations.append(destination)
        }
        var parameters = Self.parameters
        parameters.resumeOnCompletion = false
        parameters.allowDevicesWithoutP2P = allowDevicesWithoutP2P
        parameters.multifdChannels = multifd ? 2 : 0
        let (source, destination, sourceVM, destinationVM) = Self.engines(sourceRegistry, destinationRegistry, parameters)
        let pairs = try (0...(multifd ? 2 : 0)).map { _ in try DescriptorConnection.socketPair() }
        async let s = capture { try await source.run(over: pairs[0].0, multifdChannels: pairs.dropFirst().map(\.0)) }
        async let d = capture { try await destination.run(over: pairs[0].1, multifdChannels: pairs.dropFirst().map(\.1)) }
        let (sr, dr) = await (s, d)
        return RunStateOutcome(
            sources: sources.map(\.device), destinations: destinations.map(\.device), sourceDevices: sources,
            destinationDevices: destinations, sourceVM: sourceVM, destinationVM: destinationVM,
            sourceResult: sr, destinationResult: dr, destinationRunState: destination.runState)
    }

    /// The device lifecycle around the switchover, with `devices` devices at once:
    ///
    /// - source: the vCPUs stop, then every device with P2P enters RUNNING_P2P or PRE_COPY_P2P,
    ///   and only then does any enter STOP_COPY;
    /// - destination, resume off: after the load no device runs (STOP) and the guest stays
    ///   stopped; when the VMM starts it, every device reaches RUNNING_P2P before any runs, and
    ///   the vCPUs start last;
    /// - a device without P2P among several is refused at prepare time (and migrates when the
    ///   VMM allows it).
    public func checkRunStateOrder(devices: Int = 3, multifd: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) async throws
    {
        let hasP2P = device.migration?.contains(.p2p) ?? false
        if !hasP2P, devices > 1 {
            let refused = try await migrateSeveral(devices: devices, multifd: multifd)
            if case .success = refused.sourceResult {
                Issue.record("\(module.name): \(devices) devices without P2P were not refused", sourceLocation: sourceLocation)
            }
            #expect(refused.sourceVM.isRunning, "\(module.name): the refused source guest stopped", sourceLocation: sourceLocation)
        }
        let outcome = try await migrateSeveral(devices: devices, multifd: multifd, allowDevicesWithoutP2P: !hasP2P)
        let what = "\(module.name), \(devices) devices, multifd \(multifd)"
        for (side, result) in [("source", outcome.sourceResult.map { _ in () }), ("destination", outcome.destinationResult.map { _ in () })]
        {
            if case .failure(let error) = result {
                Issue.record("\(what): the \(side) failed: \(error)", sourceLocation: sourceLocation)
                return
            }
        }
        func merged(_ list: [SimulatedVFIODevice]) -> [SimulatedVFIOTransition] {
            list.flatMap(\.recordedTransitions).sorted { $0.sequence < $1.sequence }
        }
        func into(_ t: [SimulatedVFIOTransition], _ states: Set<VFIODeviceState>) -> [UInt64] {
            t.filter { !$0.isReset && states.contains($0.to) }.map(\.sequence)
        }

        let source = merged(outcome.sources)
        let stopCopy = into(source, [.stopCopy])
        let p2p = into(source, [.runningP2P, .preCopyP2P])
        #expect(stopCopy.count == devices, "\(what): \(source)", sourceLocation: sourceLocation)
        #expect(p2p.count == (hasP2P ? devices : 0), "\(what): \(source)", sourceLocation: sourceLocation)
        if let firstStopCopy = stopCopy.min() {
            #expect(
                p2p.allSatisfy { $0 < firstStopCopy }, "\(what): a device entered P2P after another entered STOP_COPY: \(source)",
                sourceLocation: sourceLocation)
        }
        if let vcpuStop = outcome.sourceVM.stopSequences.first {
            #expect(
                (p2p + stopCopy).allSatisfy { $0 > vcpuStop }, "\(what): a device stopped before the vCPUs", sourceLocation: sourceLocation)
        } else {
            Issue.record("\(what): the source vCPUs never stopped", sourceLocation: sourceLocation)
        }

        // The path into RESUMING passes through RUNNING_P2P: only what follows the load counts.
        let endOfLoad = merged(outcome.destinations).filter { $0.from == .resuming }.map(\.sequence).max() ?? 0
        let loaded = merged(outcome.destinations).filter { $0.sequence > endOfLoad }
        #expect(
            into(loaded, [.running, .runningP2P]).isEmpty, "\(what): a destination device ran with resume off: \(loaded)",
            sourceLocation: sourceLocation)
        #expect(
            outcome.destinations.allSatisfy { $0.currentState == .stop }, "\(what): destination devices not in STOP",
            sourceLocation: sourceLocation)
        #expect(!outcome.destinationVM.isRunning, "\(what): the destination guest runs with resume off", sourceLocation: sourceLocation)

        try outcome.destinationRunState.start()
        let started = merged(outcome.destinations).filter { $0.sequence > endOfLoad }
        let running = into(started, [.running])
        let runningP2P = into(started, [.runningP2P])
        #expect(
            running.count == devices && runningP2P.count == (hasP2P ? devices : 0), "\(what): \(started)", sourceLocation: sourceLocation)
        if let firstRunning = running.min() {
            #expect(
                runningP2P.allSatisfy { $0 < firstRunning }, "\(what): a device ran before every device reached RUNNING_P2P: \(started)",
                sourceLocation: sourceLocation)
        }
        if let vcpuStart = outcome.destinationVM.resumeSequences.first {
            #expect(running.allSatisfy { $0 < vcpuStart }, "\(what): the vCPUs started before a device ran", sourceLocation: sourceLocation)
        } else {
            Issue.record("\(what): the destination vCPUs never started", sourceLocation: sourceLocation)
        }
        // zip drops what one side has more of: the counts first.
        try #require(
            outcome.sourceDevices.count == devices && outcome.destinationDevices.count == devices, "\(what): device counts",
            sourceLocation: sourceLocation)
        for (n, (source, destination)) in zip(outcome.sourceDevices, outcome.destinationDevices).enumerated() {
            try expectRestoredState(source: source, destination: destination, "\(what): device \(n)", sourceLocation: sourceLocation)
        }
    }
}
