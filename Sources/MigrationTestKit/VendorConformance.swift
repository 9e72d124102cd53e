import Foundation
import MigrationCore
import MigrationStream
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// The conformance suite every vendor module runs in its own tests, with the simulator:
///
/// - full migrations through the real engine, with and without PRE_COPY, with and without
///   switchover-ack, ending with the destination device holding the source device's state:
///   the payload it committed and its config state (``expectRestoredState(source:destination:_:sourceLocation:)``);
/// - the connection cut at every record boundary, and a cancel in every source phase (sent
///   from inside the engine, so it always lands), each leaving the source device RUNNING and
///   the guest running;
/// - malformed section bodies, each refused with an error rather than a crash;
/// - the device lifecycle with several devices at once: the P2P barrier before STOP_COPY,
///   nothing running on the destination before the VMM starts the guest, then RUNNING_P2P on
///   every device before RUNNING on any (``checkRunStateOrder(devices:multifd:sourceLocation:)``).
///
/// Use it from a `@Test`:
///
///     static let kit = VendorConformance(module: AcmeModule.module, device: .opaque(size: 1 << 20, initialBytes: 4096))
///     @Test(Self.kit.enabled(for: .preCopyWithAck))
///     func migratesWithAck() async throws { try await Self.kit.checkMigration(.preCopyWithAck) }
///
/// A scenario the device cannot run is then reported as skipped, with the reason
/// (``enabled(for:sourceLocation:)``); a parameterized test takes ``runnableScenarios``.
///
/// Each check records its failures with `#expect`, so they appear in the vendor's test run at
/// the caller's source location.
public struct VendorConformance: Sendable {
    /// The module under test.
    public let module: VFIOVendorModule
    /// A simulated device representative of the module's hardware (flags, payload, sizes).
    public let device: SimulatedVFIOConfiguration

    public init(module: VFIOVendorModule, device: SimulatedVFIOConfiguration) { (self.module, self.device) = (module, device) }

    /// The migrations the suite runs.
    public enum Scenario: String, Sendable, CaseIterable, CustomStringConvertible {
        /// PRE_COPY with switchover-ack: the destination acknowledges after the initial data.
        case preCopyWithAck
        /// PRE_COPY without switchover-ack.
        case preCopyWithoutAck
        /// The device without PRE_COPY: everything moves in STOP_COPY.
        case stopCopyOnly

        public var description: String { rawValue }
        var switchoverAck: Bool { self == .preCopyWithAck }
    }

    /// What one migration produced.
    public struct Outcome: Sendable {
        public var source: SimulatedVFIODevice
        public var destination: SimulatedVFIODevice
        /// The source device with the config state its handler saved from.
        public var sourceDevice: MigratedDevice
        /// The destination device with the config state its handler restored into.
        public var destinationDevice: MigratedDevice
        public var sourceVM: TestVM
        public var destinationVM: TestVM
        public var sourceResult: Result<MigrationStatistics, any Error>
        public var destinationResult: Result<IncomingStatistics, any Error>
        /// Every byte the source wrote on the main channel.
        public var stream: [UInt8]
    }

    /// The device configuration for a scenario, or the reason the simulator cannot model it.
    public func configuration(for scenario: Scenario) -> Result<SimulatedVFIOConfiguration, SkipReason> {
        var config = device
        guard let flags = config.migration, flags.contains(.stopCopy) else {
            return .failure(SkipReason("the device configuration offers no migration"))
        }
        switch scenario {
        case .preCopyWithAck, .preCopyWithoutAck:
            guard flags.contains(.preCopy) else { return .failure(SkipReason("the device has no PRE_COPY")) }
        case .stopCopyOnly:
            config.migration = flags.subtracting(.preCopy)
            if let problem = config.validationError { return .failure(SkipReason(problem)) }
        }
        return .success(config)
    }

    /// The scenarios this device can run (``configuration(for:)`` succeeds), for a
    /// parameterized test's arguments.
    public var runnableScenarios: [Scenario] {
        Scenario.allCases.filter { if case .success = configuration(for: $0) { true } else { false } }
    }

    /// A trait that runs a test only when the device can run `scenario`, and otherwise reports
    /// it as skipped through Swift Testing with the reason:
    ///
    ///     static let kit = VendorConformance(module: AcmeModule.module, device: .opaque(size: 1 << 20, initialBytes: 4096))
    ///     @Test(Self.kit.enabled(for: .preCopyWithAck))
    ///     func migratesWithAck() async throws { try await Self.kit.checkMigration(.preCopyWithAck) }
    public func enabled(for scenario: Scenario, sourceLocation: SourceLocation = #_sourceLocation) -> ConditionTrait {
        let (runs, reason): (Bool, String) =
            switch configuration(for: scenario) {
            case .success: (true, "\(module.name) runs \(scenario)")
            case .failure(let why): (false, "\(module.name) cannot run \(scenario): \(why)")
            }
        return .enabled(if: runs, Comment(rawValue: reason), sourceLocation: sourceLocation)
    }

    /// Why a check could not run.
    public struct SkipReason: Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// Runs one migration through the engine over a socket pair.
    /// - Parameters:
    ///   - scenario: the migration to run (PRE_COPY or not, switchover-ack or not).
    ///   - fault: a fault on the source's outgoing stream.
    ///   - cancelAt: cancel the source from inside the engine as it works in this phase
    ///     (`.connecting`: before it starts; `.header`, `.setup`, `.iterating`: from a
    ///     `MigrationHandler` hook of that phase), so the cancel always lands.
    public func migrate(
        _ scenario: Scenario, fault: FaultInjectingConnection.Fault? = nil,
        cancelAt: MigrationPhase? = nil
    ) async throws -> Outcome {
        let config = try configuration(for: scenario).get()
        var destinationConfig = config
        destinationConfig.seed = config.seed &+ 0x5EED
        let sourceSide = try MigratedDevice(config)
        let destinationSide = try MigratedDevice(destinationConfig)
        let sourceDevice = sourceSide.device
        let destinationDevice = destinationSide.device
        try Self.programAsGuest(sourceDevice, seed: config.seed)

        let sourceRegistry = HandlerRegistry()
        let destinationRegistry = HandlerRegistry()
        let idstr = VFIOPCIHandler.idstr(for: config.name)
        try sourceRegistry.register(module.makeHandler(sourceDevice, sourceSide.config), idstr: idstr, instanceID: 0, versionID: 1)
        try destinationRegistry.register(
            module.makeHandler(destinationDevice, destinationSide.config), idstr: idstr, instanceID: 0, versionID: 1)
        let canceller = cancelAt.map { PhaseCanceller(phase: $0) }
        if let canceller {
            try sourceRegistry.register(canceller, idstr: PhaseCanceller.idstr, instanceID: 0, versionID: 1)
            try destinationRegistry.register(PhaseCanceller(phase: .idle), idstr: PhaseCanceller.idstr, instanceID: 0, versionID: 1)
        }

        var parameters = Self.parameters
        parameters.switchoverAck = scenario.switchoverAck
        let (source, destination, sourceVM, destinationVM) = Self.engines(sourceRegistry, destinationRegistry, parameters)

        let (a, b) = try DescriptorConnection.socketPair()
        let recorder = RecordingConnection(wrapping: a)
        let outgoing: any MigrationConnection = fault.map { FaultInjectingConnection(wrapping: recorder, fault: $0) } ?? recorder

        canceller?.arm { [weak source] in source?.cancel() }  // weak: the source's registry holds the canceller
        if cancelAt == .connecting { source.cancel() }
        async let sourceResult = capture { try await source.run(over: outgoing) }
        async let destinationResult = capture { try await destination.run(over: b) }
        let (s, d) = await (sourceResult, destinationResult)
        return Outcome(
            source: sourceDevice, destination: destinationDevice, sourceDevice: sourceSide, destinationDevice: destinationSide,
            sourceVM: sourceVM, destinationVM: destinationVM, sourceResult: s, destinationResult: d, stream: recorder.recorded)
    }

    /// The kit's migration parameters. It checks what a module moves and how it recovers, not
    /// the switchover decision or the engine's deadlines (the engine's own tests cover those):
    /// limits generous enough that no run meets one on a loaded machine or a slow debug build,
    /// while a hung peer still ends the run. The decision assumes a fixed bandwidth (QEMU's
    /// `avail-switchover-bandwidth`): on a starved machine the measured one can fall so low that
    /// the device state left for the stop never fits the limit, and with nothing more to send in
    /// pre-copy no later window corrects it — the run then waited for its stall timeout.
    static var parameters: MigrationParameters {
        var parameters = MigrationParameters()
        parameters.switchoverBandwidth = 1 << 30
        parameters.downtimeLimit = .seconds(30)
        parameters.stallTimeout = .seconds(300)
        parameters.switchoverTimeout = .seconds(300)
        return parameters
    }

    /// Both engines of one kit migration, each guest on a ``TestVM`` (the source's running).
    static func engines(
        _ sourceRegistry: HandlerRegistry, _ destinationRegistry: HandlerRegistry, _ parameters: MigrationParameters
    ) -> (source: MigrationSource, destination: MigrationDestination, sourceVM: TestVM, destinationVM: TestVM) {
        let machine = MachineConfiguration(machineType: "switchover-conformance")
        let sourceVM = TestVM(running: true)
        let destinationVM = TestVM(running: false)
        let source = MigrationSource(registry: sourceRegistry, vm: sourceVM, configuration: machine, parameters: parameters)
        let destination = MigrationDestination(
            registry: destinationRegistry, vm: destinationVM, configuration: machine, parameters: parameters)
        return (source, destination, sourceVM, destinationVM)
    }

    // MARK: Checks

    /// A full migration: both sides succeed, the destination's device state is byte-identical to
    /// what the source saved, the source device ends STOP and the destination's RUNNING.
    public func checkMigration(_ scenario: Scenario, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        if case .failure(let reason) = configuration(for: scenario) {
            try skip("\(module.name) \(scenario)", reason, sourceLocation)
        }
        let outcome = try await migrate(scenario)
        if case .failure(let error) = outcome.sourceResult {
            Issue.record("\(module.name) \(scenario): the source failed: \(error)", sourceLocation: sourceLocation)
        }
        if case .failure(let error) = outcome.destinationResult {
            Issue.record("\(module.name) \(scenario): the destination failed: \(error)", sourceLocation: sourceLocation)
        }
        try expectRestoredState(
            source: outcome.sourceDevice, destination: outcome.destinationDevice, "\(module.name) \(scenario)",
            sourceLocation: sourceLocation)
        #expect(try outcome.source.deviceState() == .stop, "\(scenario): source device", sourceLocation: sourceLocation)
        #expect(try outcome.destination.deviceState() == .running, "\(scenario): destination device", sourceLocation: sourceLocation)
        #expect(outcome.destinationVM.isRunning && !outcome.sourceVM.isRunning, "\(scenario): guests", sourceLocation: sourceLocation)
    }

    /// The offsets of every record the source writes in `scenario` (from a reference run).
    public func recordOffsets(_ scenario: Scenario) async throws -> [Int] {
        let reference = try await migrate(scenario)
        _ = try reference.sourceResult.get()
        let walker = try StreamWalker(source: MemoryByteSource(reference.stream))
        _ = try walker.readPreamble()
        var offsets = [0, 8]
        try walker.walk { offsets.append($0.offset) }
        return offsets
    }

    /// Cuts the source's stream at every record boundary (and one byte into every record):
    /// each run must fail on the source with the guest and the device running again, and
    /// the destination must end with its device reset to RUNNING.
    public func checkConnectionLoss(_ scenario: Scenario = .preCopyWithAck, sourceLocation: SourceLocation = #_sourceLocation) async throws
    {
        if case .failure(let reason) = configuration(for: scenario) {
            try skip("\(module.name) \(scenario) connection loss", reason, sourceLocation)
        }
        let offsets = try await recordOffsets(scenario)
        #expect(offsets.count >= 6, "too few records to cut at", sourceLocation: sourceLocation)
        let cuts = Set(offsets.flatMap { [$0, $0 + 1] }).sorted()
        var fired = 0
        for cut in cuts {
            let outcome = try await migrate(scenario, fault: .cut(atOffset: cut))
            // The number of PART sections depends on timing, so a later run can be shorter than
            // the reference: a cut beyond its end never fires and says nothing.
            if outcome.stream.count <= cut, case .success = outcome.sourceResult { continue }
            fired += 1
            try expectSourceRecovered(outcome, "cut at byte \(cut)", sourceLocation)
            #expect(
                try outcome.destination.deviceState() == .running, "cut at byte \(cut): destination device", sourceLocation: sourceLocation)
        }
        #expect(fired * 5 >= cuts.count * 4, "only \(fired) of \(cuts.count) cuts fell inside the stream", sourceLocation: sourceLocation)
    }

    /// The phases ``checkCancel(_:sourceLocation:)`` cancels in, all before the switchover.
    public static let cancelPhases: [MigrationPhase] = [.connecting, .header, .setup, .iterating]

    /// Cancels the source in each phase before the switchover, from inside the engine so the
    /// cancel always lands: every run must fail as cancelled, with the guest and the source
    /// device running again.
    public func checkCancel(_ scenario: Scenario = .preCopyWithAck, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        if case .failure(let reason) = configuration(for: scenario) {
            try skip("\(module.name) \(scenario) cancel", reason, sourceLocation)
        }
        for phase in Self.cancelPhases {
            let outcome = try await migrate(scenario, cancelAt: phase)
            let code: MigrationError.Code? =
                if case .failure(let error) = outcome.sourceResult { (error as? MigrationError)?.code } else { nil }
            #expect(
                code == .cancelled, "cancel in \(phase): the source ended with \(outcome.sourceResult), not cancelled",
                sourceLocation: sourceLocation)
            try expectSourceRecovered(outcome, "cancel in \(phase)", sourceLocation)
        }
    }

    /// A check asked for a scenario the device cannot run. In a test of its own, the test is
    /// cancelled with the reason (Swift Testing reports it as such, not as a pass). In a
    /// parameterized test it is a failure: Swift Testing shows a cancelled test case as
    /// passed, so such a test must take its arguments from ``runnableScenarios``, or give the
    /// scenario a test of its own with ``enabled(for:sourceLocation:)``.
    private func skip(_ what: String, _ reason: SkipReason, _ sourceLocation: SourceLocation) throws -> Never {
        if Test.current?.isParameterized == true {
            Issue.record(
                "\(what) cannot run (\(reason)); a parameterized test case cannot report a skip: pass runnableScenarios as the arguments, or give the scenario its own test with enabled(for:)",
                sourceLocation: sourceLocation)
            throw reason
        }
        try Test.cancel("SKIPPED: \(what): \(reason)", sourceLocation: sourceLocation)
    }

    private func expectSourceRecovered(_ outcome: Outcome, _ what: String, _ sourceLocation: SourceLocation) throws {
        if case .success = outcome.sourceResult {
            Issue.record("\(what): the source reported success", sourceLocation: sourceLocation)
        }
        #expect(outcome.sourceVM.isRunning, "\(what): the source guest is not running", sourceLocation: sourceLocation)
        #expect(try outcome.source.deviceState() == .running, "\(what): the source device is not RUNNING", sourceLocation: sourceLocation)
    }

    /// Section bodies a destination must refuse, each as the bytes after the section header.
    public static let malformedBodies: [(name: String, body: [UInt8])] = {
        func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64($0))) } }
        let data = VFIOSectionTag.dataState.rawValue
        let end = VFIOSectionTag.endOfState.rawValue
        return [
            ("an unknown tag", be64(0xFFFF_FFFF_EF10_00FF)),
            ("a bare be64 that is no tag", be64(0x1234)),
            ("a truncated tag", [0xff, 0xff, 0xff]),
            ("a DATA chunk larger than the limit", be64(data) + be64(UInt64.max)),
            ("a DATA chunk cut short", be64(data) + be64(4096) + [UInt8](repeating: 7, count: 100)),
            ("SETUP_STATE without END_OF_STATE", be64(VFIOSectionTag.setupState.rawValue) + be64(data)),
            ("INIT_DATA_SENT while switchover-ack is off", be64(VFIOSectionTag.initDataSent.rawValue)),
            ("CONFIG_STATE of the wrong length", be64(VFIOSectionTag.configState.rawValue) + [1, 2, 3] + be64(end)),
            ("CONFIG_LOAD_READY without multifd", be64(VFIOSectionTag.configLoadReady.rawValue))
        ]
    }()

    /// Feeds every malformed body to a destination handler: each must throw (not crash, not
    /// hang), and cleanup must leave the destination device reset to RUNNING.
    public func checkMalformedBodies(sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (name, body) in Self.malformedBodies {
            let destination = try SimulatedVFIODevice(device)
            let handler = module.makeHandler(destination, nil)
            let identity = HandlerIdentity(idstr: VFIOPCIHandler.idstr(for: device.name), instanceID: 0, versionID: 1)
            let context = ConformanceLoadContext(identity: identity)
            try handler.loadSetup(context: context)
            let header = SectionHeader(
                kind: .part, sectionID: 1, binding: identity)
            let reader = StreamReader(source: MemoryByteSource(body))
            #expect(throws: (any Error).self, "\(module.name): \(name) was accepted", sourceLocation: sourceLocation) {
                try handler.loadState(from: reader, header: header, context: context)
            }
            handler.loadCleanup(succeeded: false)
            #expect(try destination.deviceState() == .running, "\(name): destination device after cleanup", sourceLocation: sourceLocation)
        }
    }
}

/// A load context for handler-level checks: switchover-ack off, approvals refused.
final class ConformanceLoadContext: LoadContext, Sendable {
    let identity: HandlerIdentity
    init(identity: HandlerIdentity) { self.identity = identity }
    var switchoverAckEnabled: Bool { false }
    var multifdTransfer: Bool { false }
    func approveSwitchover() throws { throw SwitchoverAckError.disabled(identity) }
    func revokeSwitchover() throws { throw SwitchoverAckError.disabled(identity) }
}
