import ArgumentParser
import ExampleVM
import MigrationCore
import MigrationStream
import MigrationTLS

/// `switchover incoming --listen ADDRESS`: the destination end. Builds the same example VM
/// as the source (other content), receives one migration and reports what arrived.
struct Incoming: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive one migration of an example VM with simulated VFIO devices.",
        discussion: """
            Give the same --device, --memory, --switchover-ack and --multifd-channels options as \
            the source. Prints "listening on ADDRESS" on standard error (with the port chosen \
            when PORT is 0), then the statistics of the incoming migration, with the digests of \
            the RAM and of each device's loaded state to compare with the source's. On a \
            non-loopback tcp: address, give --tls-creds (or --insecure).

            With --devices-only and --listen file:FILE, the file may come from another VMM \
            (QEMU's `migrate "exec:cat > FILE"`): only the VFIO sections of the devices given are \
            loaded; every other section (ram, QEMU's device vmstates) is skipped by the size the \
            file's VMDESCRIPTION trailer gives it, and the guest RAM keeps its content. Name each \
            device as QEMU did (name=0000:00:04.0 for QEMU's 0000:00:04.0/vfio) and give the \
            file's --machine-type.

            Examples:
              switchover incoming --listen file:qemu.mig --devices-only --machine-type pc-q35-10.0 \\
                --device mtty:name=0000:00:04.0
              switchover incoming --listen tcp:0.0.0.0:4444 --tls-creds /etc/switchover/tls \\
                --tls-authz CN=src.example,O=Example --switchover-ack \\
                --device mlx5:state=256MiB,initial=64MiB,load=300ms
            """
    )

    @Option(
        name: .customLong("listen"),
        help: ArgumentHelp(
            "Where to listen: tcp:HOST:PORT (PORT 0 picks one), tcp:[V6]:PORT, unix:PATH, file:PATH or fd:N.", valueName: "address"))
    var address: String

    @OptionGroup(title: "Example VM") var machine: MachineOptions
    @OptionGroup(title: "Migration") var migration: MigrationOptions
    @OptionGroup(title: "Limits on the source (docs/security.md)") var limits: DestinationLimitOptions
    @OptionGroup(title: "TLS") var tls: TLSOptions

    @Option(
        help: ArgumentHelp(
            "Accept only a source whose certificate subject is this RFC 2253 name (e.g. CN=src.example,O=Example). Repeat for more. Default: any certificate the CA signed.",
            valueName: "dn"))
    var tlsAuthz: [String] = []

    @Flag(
        help: ArgumentHelp(
            "With --listen file:FILE: load only the VFIO sections of the devices given; skip every other section by its size in the file's VMDESCRIPTION (a QEMU-written file)."
        ))
    var devicesOnly = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        let target = try OutputOptions.address(address, option: "--listen")
        try tls.validate(target, option: "--listen")
        if !tlsAuthz.isEmpty && tls.credentials == nil { throw ValidationError("--tls-authz needs --tls-creds") }
        if devicesOnly {
            guard case .file = target else { throw ValidationError("--devices-only needs --listen file:FILE") }
        }
    }

    func run() async throws {
        let target = try OutputOptions.address(address, option: "--listen")
        var parameters = migration.parameters
        limits.apply(to: &parameters)
        let secured = tls.configuration(authorized: tlsAuthz, handshakeTimeout: migration.stallTimeout.duration).map {
            TLSTransport(base: target.transport, configuration: $0)
        }
        if let secured {
            do { try secured.checkCredentials(server: true) } catch { Migrate.fail("incoming", "\(error)") }
        }
        let vm = try Migrate.build(machine.machineConfiguration, role: .destination, command: "incoming")
        let destination = MigrationDestination(runState: vm.runState, configuration: vm.machine, parameters: parameters)

        let listener: any MigrationListener
        var bound = target
        do {
            if devicesOnly, case .file(let path) = target {
                listener = try Self.selectDevices(path: path, registry: vm.runState.registry).listen()
            } else if case .tcp(let host, let port) = target {
                let tcp = try TCPListener(host: host, port: port)
                bound = .tcp(host: host, port: tcp.port)
                listener = try secured?.secure(tcp) ?? tcp
            } else {
                listener = try (secured ?? target.transport).listen()
            }
        } catch {
            vm.shutdown()
            Migrate.fail("incoming", "cannot \(devicesOnly ? "read" : "listen on") \(target): \(error)")
        }
        var standardError = StandardError()
        print("listening on \(bound)\(secured == nil ? "" : " (TLS, mutual authentication)")", to: &standardError)

        let showProgress = !output.noProgress
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
        if output.json {
            print(Report.incomingJSON(statistics, address: bound.description, digests: digests).text)
        } else {
            print(Report.incomingText(statistics, address: bound.description, digests: digests))
        }
    }

    /// The file cut down to the VFIO sections this destination has handlers for; what is skipped
    /// goes to standard error.
    static func selectDevices(path: String, registry: HandlerRegistry) throws -> SelectedFileTransport {
        let selection = try SectionSelection(fileAt: path) { idstr, instance in
            idstr.hasSuffix(VFIOSectionTag.idstrSuffix) && registry.entry(idstr: idstr, instanceID: instance) != nil
        }
        var standardError = StandardError()
        let skipped = selection.skipped.map { "\($0.idstr)" + ($0.instanceID == 0 ? "" : "#\($0.instanceID)") }
        print(
            "\(path): loading \(selection.kept.isEmpty ? "no section" : selection.kept.joined(separator: ", ")); "
                + "skipped \(selection.skipped.reduce(0) { $0 + $1.bytes }) bytes of \(skipped.count) sections without a device here"
                + (skipped.isEmpty ? "" : " (\(skipped.prefix(12).joined(separator: ", "))\(skipped.count > 12 ? ", …" : ""))"),
            to: &standardError)
        let devices = registry.entries.filter { $0.identity.idstr.hasSuffix(VFIOSectionTag.idstrSuffix) }
        let missing = devices.map(\.identity.idstr).filter { !selection.kept.contains($0) }
        guard missing.isEmpty else {
            throw ValidationError("\(path) has no section for \(missing.joined(separator: ", "))")
        }
        return SelectedFileTransport(path: path, selection: selection)
    }
}
