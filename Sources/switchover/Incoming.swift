import ArgumentParser
import ExampleVM
import MigrationCore

/// `switchover incoming --listen ADDRESS`: the destination end. Builds the same example VM
/// as the source (other content), receives one migration and reports what arrived.
struct Incoming: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive one migration of an example VM with simulated VFIO devices.",
        discussion: """
            Give the same --device, --memory, --switchover-ack and --multifd-channels options as \
            the source. Prints "listening on ADDRESS" on standard error (with the port chosen \
            when PORT is 0), then the statistics of the incoming migration, with the digests of \
            the RAM and of each device's loaded state to compare with the source's.

            Example:
              switchover incoming --listen tcp:0.0.0.0:4444 --switchover-ack \\
                --device mlx5:state=256MiB,initial=64MiB,load=300ms
            """
    )

    @Option(name: .customLong("listen"), help: ArgumentHelp(
        "Where to listen: tcp:HOST:PORT (PORT 0 picks one), tcp:[V6]:PORT, unix:PATH, file:PATH or fd:N.", valueName: "address"))
    var address: String

    @OptionGroup(title: "Example VM") var machine: MachineOptions
    @OptionGroup(title: "Migration") var migration: MigrationOptions
    @OptionGroup(title: "Limits on the source (docs/security.md)") var limits: DestinationLimitOptions

    @Flag(help: "Print the final statistics as one JSON object.")
    var json = false

    @Flag(name: .customLong("no-progress"), help: "Do not show the progress line.")
    var noProgress = false

    func validate() throws {
        do { _ = try MigrationAddress(parsing: address) } catch { throw ValidationError("--listen \(error)") }
    }

    func run() async throws {
        let target: MigrationAddress
        do { target = try MigrationAddress(parsing: address) } catch { throw ValidationError("--listen \(error)") }
        var parameters = migration.parameters
        limits.apply(to: &parameters)
        let vm = try Migrate.build(machine.machineConfiguration, role: .destination, command: "incoming")
        let destination = MigrationDestination(registry: vm.registry, vm: vm, configuration: vm.machine, parameters: parameters)

        let listener: any MigrationListener
        var bound = target
        do {
            if case .tcp(let host, let port) = target {
                let tcp = try TCPListener(host: host, port: port)
                bound = .tcp(host: host, port: tcp.port)
                listener = tcp
            } else {
                listener = try target.transport.listen()
            }
        } catch {
            vm.shutdown()
            Migrate.fail("incoming", "cannot listen on \(target): \(error)")
        }
        var standardError = StandardError()
        print("listening on \(bound)", to: &standardError)

        let showProgress = !noProgress
        let watcher = Task {
            let display = ProgressDisplay(enabled: showProgress, role: .destination, switchoverAck: parameters.switchoverAck)
            for await event in destination.progress { display.show(event) }
            display.finish()
        }
        let interrupt = CancelOnInterrupt { destination.cancel() }
        let statistics: IncomingStatistics
        do {
            statistics = try await destination.run(accepting: listener)
        } catch {
            await watcher.value
            interrupt.stop()
            vm.shutdown()
            Migrate.fail("incoming", "\(error)")
        }
        await watcher.value
        interrupt.stop()
        let digests = vm.digests
        vm.shutdown()
        if json {
            print(Report.incomingJSON(statistics, address: bound.description, digests: digests).text)
        } else {
            print(Report.incomingText(statistics, address: bound.description, digests: digests))
        }
    }
}
