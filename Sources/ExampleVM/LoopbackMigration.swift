import Foundation
import MigrationCore
import MigrationStream
import Synchronization

/// The outcome of ``LoopbackMigration/run(_:parameters:timeout:progress:secure:)``.
public struct LoopbackResult: Sendable {
    /// The source's statistics (downtime, predictions, bytes, per handler).
    public var statistics: MigrationStatistics
    /// The destination's.
    public var incoming: IncomingStatistics
    public var sourceDigests: MachineDigests
    public var destinationDigests: MachineDigests
    /// RAM and every device compared, source against destination.
    public var verification: MigrationVerification
    /// The source's switchover: the vCPUs stop, every device passes the P2P barrier, then
    /// enters STOP_COPY (``ExampleMachine/switchoverLifecycle``).
    public var sourceLifecycle: [LifecycleEvent]
    /// The destination's start: every device RUNNING_P2P, then RUNNING, then the vCPUs.
    public var destinationLifecycle: [LifecycleEvent]
    /// What the source's devices wrote into guest RAM by DMA while it ran (specs with `dma=`).
    public var deviceDMA: [DeviceDMAReport] = []
}

/// Why a loopback migration failed: each side's error (the source's is the one to show
/// first; the destination's says what it saw).
public struct LoopbackMigrationError: Error, Sendable, CustomStringConvertible {
    public var source: (any Error)?
    public var destination: (any Error)?
    /// When the run's timeout cancelled it: the last progress event.
    public var timedOut: MigrationProgress?

    public init(source: (any Error)?, destination: (any Error)?, timedOut: MigrationProgress? = nil) {
        (self.source, self.destination, self.timedOut) = (source, destination, timedOut)
    }

    public var description: String {
        if let p = timedOut {
            let predicted = p.predictedDowntime.map { Units.duration($0) } ?? "unknown"
            return "did not converge before the timeout: \(Units.bytes(p.pendingBytes)) pending, predicted downtime \(predicted), "
                + "at \(Units.rate(p.bandwidth)); raise the downtime limit or shrink what the devices send while stopped"
        }
        return switch (source, destination) {
        case (let s?, let d?): "source: \(s); destination: \(d)"
        case (let s?, nil): "source: \(s)"
        case (nil, let d?): "destination: \(d)"
        case (nil, nil): "unknown failure"
        }
    }
}

/// How ``LoopbackMigration`` secures its channels: wrappers for the destination's listener and
/// the source's transport (MigrationTLS's `TLSTransport` provides both).
public struct LoopbackSecurity: Sendable {
    public var listener: @Sendable (any MigrationListener) throws -> any MigrationListener
    public var transport: @Sendable (any MigrationTransport) -> any MigrationTransport

    public init(
        listener: @escaping @Sendable (any MigrationListener) throws -> any MigrationListener,
        transport: @escaping @Sendable (any MigrationTransport) -> any MigrationTransport
    ) {
        self.listener = listener
        self.transport = transport
    }
}

/// One migration between two ``ExampleMachine``s in this process: the destination listens on
/// TCP loopback (a free port), the source connects to it; each engine runs on its own threads.
/// What `switchover demo` and the benchmarks run.
public enum LoopbackMigration {
    /// Builds both machines from `configuration`, starts the source guest, migrates with the
    /// same `parameters` on both ends, compares the two sides and shuts both down.
    /// - Parameters:
    ///   - configuration: the machines and devices both ends host.
    ///   - parameters: the migration parameters, the same on both ends.
    ///   - timeout: cancels the migration when it has not completed by then (a source that
    ///     never converges keeps iterating, as QEMU's does).
    ///   - progress: called with every source progress event (on a task of its own).
    ///   - secure: wraps the destination's listener and the source's transport (e.g. in TLS).
    /// - Throws: ``LoopbackMigrationError`` when the migration fails; setup errors as they are.
    public static func run(
        _ configuration: ExampleMachineConfiguration, parameters: MigrationParameters,
        timeout: Duration? = nil,
        progress: (@Sendable (MigrationProgress) -> Void)? = nil,
        secure: LoopbackSecurity? = nil
    ) async throws -> LoopbackResult {
        try await run(configuration, parameters: parameters, timeout: timeout, progress: progress, secure: secure, trackDeviceDMA: true)
    }

    /// As the public `run`; `trackDeviceDMA` false is the tests' switch that leaves the devices'
    /// DMA untracked (the danger the tracking exists for).
    static func run(
        _ configuration: ExampleMachineConfiguration, parameters: MigrationParameters, timeout: Duration?,
        progress: (@Sendable (MigrationProgress) -> Void)?, secure: LoopbackSecurity?, trackDeviceDMA: Bool
    ) async throws -> LoopbackResult {
        let sourceMachine = try ExampleMachine(configuration, role: .source)
        let destinationMachine = try ExampleMachine(configuration, role: .destination)
        defer {
            sourceMachine.shutdown()
            destinationMachine.shutdown()
        }
        let tcp = try TCPListener(host: "127.0.0.1", port: 0)
        let listener = try secure?.listener(tcp) ?? tcp
        let plain: any MigrationTransport = TCPTransport(host: "127.0.0.1", port: tcp.port)
        let transport = secure?.transport(plain) ?? plain
        let destination = MigrationDestination(
            runState: destinationMachine.runState,
            configuration: destinationMachine.machine, parameters: parameters)
        let source = MigrationSource(
            runState: sourceMachine.runState,
            configuration: sourceMachine.machine, parameters: parameters,
            dirtyTracking: trackDeviceDMA ? sourceMachine.dirtyTracking : .none)
        let last = LastProgress()
        let watcher = Task {
            for await event in source.progress {
                last.set(event)
                progress?(event)
            }
        }
        let deadline = timeout.map { limit in
            Task {
                try await Task.sleep(for: limit)
                last.timedOut()
                source.cancel()
            }
        }
        defer { deadline?.cancel() }
        try sourceMachine.start()
        async let incoming = Self.capture { try await destination.run(accepting: listener) }
        let outgoing = await Self.capture { try await source.run(to: transport) }
        if case .failure = outgoing { destination.cancel() }
        let incomingResult = await incoming
        await watcher.value
        switch (outgoing, incomingResult) {
        case (.success(let statistics), .success(let incomingStatistics)):
            let sourceDigests = sourceMachine.digests
            let destinationDigests = destinationMachine.digests
            return LoopbackResult(
                statistics: statistics, incoming: incomingStatistics, sourceDigests: sourceDigests,
                destinationDigests: destinationDigests,
                verification: sourceDigests.verify(destination: destinationDigests),
                sourceLifecycle: sourceMachine.switchoverLifecycle,
                destinationLifecycle: destinationMachine.switchoverLifecycle, deviceDMA: sourceMachine.vm.workload.deviceDMA)
        case (.failure(let s), .failure(let d)):
            throw LoopbackMigrationError(source: s, destination: d, timedOut: last.timeout)
        case (.failure(let s), .success):
            throw LoopbackMigrationError(source: s, destination: nil, timedOut: last.timeout)
        case (.success, .failure(let d)):
            throw LoopbackMigrationError(source: nil, destination: d)
        }
    }

    /// The last progress event, and whether the timeout fired.
    private final class LastProgress: Sendable {
        private let state = Mutex<(event: MigrationProgress?, fired: Bool)>((nil, false))

        func set(_ e: MigrationProgress) { state.withLock { $0.event = e } }
        func timedOut() { state.withLock { $0.fired = true } }
        /// The last event when the timeout fired.
        var timeout: MigrationProgress? { state.withLock { $0.fired ? $0.event : nil } }
    }

    private static func capture<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }
}
