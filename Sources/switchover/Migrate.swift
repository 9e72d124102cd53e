import ArgumentParser
import Dispatch
import ExampleVM
import Foundation
import MigrationCore
import MigrationTLS
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// `switchover migrate --to ADDRESS`: the source end. Hosts an example VM (RAM with a
/// dirtying workload plus the simulated devices given with `--device`) and migrates it live.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Migrate an example VM with simulated VFIO devices to a destination.",
        discussion: """
            Start `switchover incoming` with the same --device, --memory, --switchover-ack and \
            --multifd-channels options first (or within --connect-timeout). To another host over \
            tcp:, give --tls-creds (or --insecure). The source shows a \
            live progress line on standard error (plain lines when it is not a terminal) and \
            prints the final statistics, with the digests of the RAM and of each device's state \
            stream to compare with the destination's. Ctrl-C cancels: the guest keeps running here.

            Example:
              switchover migrate --to tcp:10.0.0.2:4444 --tls-creds /etc/switchover/tls --switchover-ack \\
                --device mlx5:state=256MiB,initial=64MiB,load=300ms
            """
    )

    @Option(
        name: .customLong("to"),
        help: ArgumentHelp(
            "Where the destination listens: tcp:HOST:PORT, tcp:[V6]:PORT, unix:PATH, file:PATH or fd:N.", valueName: "address"))
    var address: String

    @OptionGroup(title: "Example VM") var machine: MachineOptions
    @OptionGroup(title: "Migration") var migration: MigrationOptions
    @OptionGroup(title: "TLS") var tls: TLSOptions

    @Option(
        help: ArgumentHelp(
            "The name (or address) the destination's certificate must carry. Default: the host of --to.", valueName: "name"))
    var tlsHostname: String?

    @Option(
        help: ArgumentHelp(
            "Keep trying to connect this long while the destination is not listening yet.", valueName: "duration"))
    var connectTimeout = DurationArgument("10s", .seconds(10))

    @Option(
        help: ArgumentHelp(
            "Cancel the migration if it has not completed by then (the guest keeps running here). Default: no limit, as QEMU.",
            valueName: "duration"))
    var timeout: DurationArgument?

    @OptionGroup var output: OutputOptions

    func validate() throws {
        let target = try OutputOptions.address(address, option: "--to")
        try tls.validate(target, option: "--to")
        if tlsHostname != nil && tls.credentials == nil { throw ValidationError("--tls-hostname needs --tls-creds") }
        if tls.credentials != nil && tlsHostname == nil {
            if case .tcp = target {
            } else {
                throw ValidationError("--tls-creds over \(target) needs --tls-hostname: the name the destination's certificate carries")
            }
        }
        if let timeout, timeout.duration <= .zero { throw ValidationError("--timeout must be more than 0") }
    }

    func run() async throws {
        let target = try OutputOptions.address(address, option: "--to")
        let parameters = migration.parameters
        var transport = target.transport
        if let configuration = tls.configuration(
            hostname: tlsHostname, handshakeTimeout: migration.stallTimeout.duration,
            awaitServerConfirmation: !migration.noExtensions)
        {
            let secured = TLSTransport(base: transport, configuration: configuration)
            do { try secured.checkCredentials(server: false) } catch { Self.fail("migrate", "\(error)") }
            transport = secured
        }
        let vm = try Self.build(machine.machineConfiguration, role: .source, command: "migrate")
        let source = MigrationSource(
            runState: vm.runState, configuration: vm.machine, parameters: parameters, dirtyTracking: vm.dirtyTracking)
        let showProgress = !output.noProgress
        let last = LastEvent()
        let watcher = Task {
            let display = ProgressDisplay(enabled: showProgress, role: .source, switchoverAck: parameters.switchoverAck)
            for await event in source.progress {
                last.event = event
                display.show(event)
            }
            display.finish()
        }
        let interrupt = CancelOnInterrupt { source.cancel() }
        let deadline = timeout.map { limit in
            Task {
                try await Task.sleep(for: limit.duration)
                last.timedOut = true
                source.cancel()
            }
        }
        do {
            try vm.start()
        } catch {
            Self.fail("migrate", "the example guest could not be started: \(error)")
        }
        let statistics: MigrationStatistics
        do {
            statistics = try await source.run(to: RetryingTransport(base: transport, deadline: connectTimeout.duration))
        } catch {
            deadline?.cancel()
            await watcher.value
            interrupt.stop()
            vm.shutdown()
            if last.timedOut, let timeout {
                let p = last.event
                let state = p.map { "\($0.phase), \(Units.bytes($0.pendingBytes)) pending at \(Units.rate($0.bandwidth))" } ?? "not started"
                Self.fail("migrate", "not completed within --timeout \(timeout.text) (\(state)); cancelled, the guest runs here")
            }
            Self.fail("migrate", "\(error)")
        }
        deadline?.cancel()
        await watcher.value
        interrupt.stop()
        let digests = vm.digests
        vm.shutdown()
        if output.json {
            print(Report.sourceJSON(statistics, address: target.description, parameters: parameters, digests: digests).text)
        } else {
            print(Report.sourceText(statistics, address: target.description, parameters: parameters, digests: digests))
        }
    }

    /// Builds one side's machine; a failure is an error line and status 1.
    static func build(_ configuration: ExampleMachineConfiguration, role: ExampleMachine.Role, command: String) throws -> ExampleMachine {
        do {
            return try ExampleMachine(configuration, role: role)
        } catch {
            fail(command, "cannot build the example VM: \(error)")
        }
    }

    /// One error line on standard error, exit status 1.
    static func fail(_ command: String, _ message: String) -> Never {
        var standardError = StandardError()
        print("switchover \(command): \(message)", to: &standardError)
        Migrate.exit(withError: ExitCode(1))
    }
}

/// The last progress event and whether the timeout fired, shared by the tasks of `migrate`.
final class LastEvent: Sendable {
    private let state = Mutex<(event: MigrationProgress?, fired: Bool)>((nil, false))

    /// The last event before the timeout fired (the cancel's own event is not kept).
    var event: MigrationProgress? {
        get { state.withLock { $0.event } }
        set { state.withLock { if !$0.fired { $0.event = newValue } } }
    }

    var timedOut: Bool {
        get { state.withLock { $0.fired } }
        set { state.withLock { $0.fired = newValue } }
    }
}

/// Retries `connect()` while nothing listens yet (connection refused, no socket file), until
/// the deadline; other errors are thrown at once.
struct RetryingTransport: MigrationTransport {
    var base: any MigrationTransport
    var deadline: Duration

    func connect() throws -> any MigrationConnection {
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while true {
            do {
                return try base.connect()
            } catch TransportError.system(let operation, let code) where code == .connectionRefused || code == .noSuchFileOrDirectory {
                if clock.now >= end { throw TransportError.system(operation: operation, errno: code) }
                usleep(100_000)
            }
        }
    }

    func listen() throws -> any MigrationListener { try base.listen() }
}

/// Calls `action` on the first SIGINT (Ctrl-C) instead of exiting; a second one exits.
final class CancelOnInterrupt {
    private let source: any DispatchSourceSignal

    init(_ action: @escaping @Sendable () -> Void) {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler {
            var standardError = StandardError()
            print("\ninterrupted: cancelling (Ctrl-C again to quit at once)", to: &standardError)
            signal(SIGINT, SIG_DFL)
            action()
        }
        source.resume()
        self.source = source
    }

    func stop() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}
