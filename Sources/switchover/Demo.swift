import ArgumentParser
import CLISupport
import ExampleVM
import MigrationCore

#if canImport(Glibc)
import Glibc
#endif

/// `switchover demo`: both ends in this process over TCP loopback, the same VM and devices
/// migrated with switchover-ack off and on, each without and with multifd,
/// a table of downtimes, and whether every byte arrived.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Migrate an example VM over loopback with switchover-ack off and on, and compare.",
        discussion: """
            Each scenario runs --repeat times (interleaved) and the table shows the median: the \
            downtime measured (guest stopped on the source to the destination's SHUT), the \
            downtime predicted at the switchover decision and its parts (transfer: QEMU's formula, \
            pending / bandwidth; the destination's backlog; its final load), the total time, the \
            bytes sent, and whether RAM and every device's state arrived byte-identical. --json \
            also gives every run's figures. The first run also shows the run-state order at the \
            switchover: the source's vCPUs stop, every device enters PRE_COPY_P2P before any \
            enters STOP_COPY; on the destination every device reaches RUNNING_P2P before any runs, \
            and the vCPUs start last.

            The default device is an mlx5 VF whose initial data costs the destination 200 ms to \
            load (firmware resource allocation): by QEMU's rule that load can fall inside the \
            downtime without switchover-ack; with the ack, or with the destination's backlog \
            reports (Switchover's extensions, on here), the source waits until it is done before \
            stopping the guest.
            """
    )

    static let defaultDevices = ExampleMachineConfiguration.demo().devices.map(\.description)
    static let quickDevices = ["mlx5:state=2MiB,initial=1MiB,load=50ms,dma=256KiB/s"]

    @Option(
        name: .customLong("device"),
        help: ArgumentHelp(
            "A simulated device (as for migrate); repeat for more. Default: \(defaultDevices.joined(separator: " and ")).",
            valueName: "spec"))
    var deviceSpecs: [String] = []

    @Option(help: ArgumentHelp("Guest RAM.", valueName: "size"))
    var memory = ByteSize("16MiB", bytes: 16 << 20)

    @Option(
        help: ArgumentHelp("Guest memory dirtied per second while the source runs.", valueName: "rate"))
    var dirtyRate = ByteRate("8MiB/s", bytesPerSecond: 8 << 20)

    @Option(help: ArgumentHelp("The longest the guest may stay stopped.", valueName: "duration"))
    var downtimeLimit = DurationArgument("300ms", .milliseconds(300))

    @Option(
        help: ArgumentHelp(
            "Channels of the multifd rows (0: no multifd rows).", valueName: "n"))
    var multifdChannels = 4

    @Option(name: .customLong("repeat"), help: ArgumentHelp("Runs per scenario (the table shows medians).", valueName: "n"))
    var repeatCount = 3

    @Option(
        help: ArgumentHelp(
            "Give up on a run that has not completed by then (a migration that never converges iterates forever).", valueName: "duration"))
    var runTimeout = DurationArgument("60s", .seconds(60))

    @Flag(
        help: """
            A tiny configuration for a check in seconds: 8 MiB of RAM dirtied at 1 MiB/s, one 2 MiB mlx5 device writing 256 KiB/s \
            of it by DMA, one run each.
            """)
    var quick = false

    @Flag(help: "Print {\"runs\": [...]} as one JSON object instead of the table.")
    var json = false

    func validate() throws {
        for text in deviceSpecs {
            do { _ = try DeviceSpec(parsing: text) } catch { throw ValidationError("--device \(error.spec): \(error.problem)") }
        }
        do { _ = try machineConfiguration.deviceNames() } catch { throw ValidationError("--device \(error.spec): \(error.problem)") }
        guard (1...100).contains(repeatCount) else { throw ValidationError("--repeat must be 1 to 100") }
        guard (0...255).contains(multifdChannels) else { throw ValidationError("--multifd-channels must be 0 to 255") }
        guard memory.bytes >= 1 << 20, memory.bytes <= 64 << 30 else {
            throw ValidationError("--memory \(memory.text): the example VM has 1 MiB to 64 GiB of RAM")
        }
        guard downtimeLimit.duration > .zero, runTimeout.duration > .zero else {
            throw ValidationError("--downtime-limit and --run-timeout must be more than 0")
        }
    }

    var machineConfiguration: ExampleMachineConfiguration {
        let specs = deviceSpecs.isEmpty ? (quick ? Self.quickDevices : Self.defaultDevices) : deviceSpecs
        return ExampleMachineConfiguration(
            memoryBytes: quick && memory.bytes == 16 << 20 ? 8 << 20 : Int(memory.bytes),
            dirtyPagesPerSecond: Int(clamping: (quick ? 1 << 20 : dirtyRate.bytesPerSecond) / UInt64(GuestRAM.pageSize)),
            devices: specs.compactMap { try? DeviceSpec(parsing: $0) })
    }

    /// One row of the table.
    struct Scenario {
        var name: String
        var switchoverAck: Bool
        var multifdChannels: Int
    }

    /// Switchover-ack off and on, each without and (when this build has it) with multifd.
    func scenarios() -> [Scenario] {
        var list: [Scenario] = []
        for ack in [false, true] {
            list.append(Scenario(name: ack ? "ack on" : "ack off", switchoverAck: ack, multifdChannels: 0))
            if multifdChannels > 0 {
                list.append(
                    Scenario(name: (ack ? "ack on" : "ack off") + ", multifd", switchoverAck: ack, multifdChannels: multifdChannels))
            }
        }
        return list
    }

    struct Outcome {
        var scenario: Scenario
        var results: [LoopbackResult] = []

        func median(_ value: (LoopbackResult) -> Double?) -> Double? {
            let values = results.compactMap(value).sorted()
            guard !values.isEmpty else { return nil }
            return values.count % 2 == 1 ? values[values.count / 2] : (values[values.count / 2 - 1] + values[values.count / 2]) / 2
        }

        var downtime: Double? { median { $0.statistics.downtime.map(Units.milliseconds) } }
        /// The median of one of ``Report/predictions`` in milliseconds (the parts' medians need
        /// not add up to the median prediction).
        func predicted(_ figure: (SwitchoverDecision) -> Duration?) -> Double? {
            median { $0.statistics.decision.flatMap(figure).map(Units.milliseconds) }
        }
        /// The largest prediction error of the runs, as a fraction of the measured downtime.
        var worstPredictionError: Double? {
            let errors = results.compactMap { r -> Double? in
                guard let measured = r.statistics.downtime.map(Units.milliseconds), measured > 0,
                    let predicted = r.statistics.decision?.predictedDowntime.map(Units.milliseconds)
                else { return nil }
                return abs(predicted - measured) / measured
            }
            return errors.max()
        }
        /// The longest downtime of the runs.
        var worstDowntime: Double? { results.compactMap { $0.statistics.downtime.map(Units.milliseconds) }.max() }
        var total: Double? { median { Units.milliseconds($0.statistics.totalTime) } }
        /// The main stream and the multifd channels.
        var bytes: Double? { median { Double($0.statistics.bytesTransferred + $0.statistics.multifdBytes) } }
        /// Every byte arrived, and every device's DMA worked (a write that faulted is a failure).
        var verified: Bool {
            !results.isEmpty && results.allSatisfy { $0.verification.verified && $0.deviceDMA.allSatisfy { $0.failure == nil } }
        }
    }

    func run() async throws {
        let configuration = machineConfiguration
        let repeats = quick ? 1 : repeatCount
        if !json {
            say("switchover demo: both ends on TCP loopback, \(HostInfo.summary)")
            let rate = Units.bytes(UInt64(configuration.dirtyPagesPerSecond * GuestRAM.pageSize)) + "/s"
            say(
                "  VM: \(Units.bytes(UInt64(configuration.memoryBytes))) RAM dirtied at \(rate); devices: "
                    + configuration.devices.map(\.description).joined(separator: ", "))
        }
        var outcomes = scenarios().map { Outcome(scenario: $0) }
        for round in 1...repeats {
            for index in outcomes.indices {
                let scenario = outcomes[index].scenario
                var parameters = MigrationParameters()
                parameters.downtimeLimit = downtimeLimit.duration
                parameters.switchoverAck = scenario.switchoverAck
                parameters.multifdChannels = scenario.multifdChannels
                let result: LoopbackResult
                do {
                    result = try await LoopbackMigration.run(configuration, parameters: parameters, timeout: runTimeout.duration)
                } catch {
                    Migrate.fail("demo", "\(scenario.name), run \(round): \(error)")
                }
                outcomes[index].results.append(result)
                if !json {
                    let downtime = result.statistics.downtime.map(Units.duration) ?? "-"
                    say(
                        "  run \(round)/\(repeats) \(scenario.name): downtime \(downtime), total \(Units.duration(result.statistics.totalTime)), "
                            + (result.verification.verified ? "byte-identical" : "MISMATCH"))
                    if round == 1, index == 0 {
                        say("    run state at the switchover (VMRunState: vCPUs, then every device behind the P2P barrier):")
                        say("      source:      " + LifecycleEvent.line(result.sourceLifecycle))
                        say("      destination: " + LifecycleEvent.line(result.destinationLifecycle))
                        say("    device DMA: " + Self.dmaText(result))
                    }
                }
            }
        }
        if json {
            print(Self.json(outcomes).text)
        } else {
            say("")
            say(Self.table(outcomes, repeats: repeats, configuration: configuration))
        }
        if !outcomes.allSatisfy(\.verified) {
            Migrate.fail("demo", "a destination's state differs from its source's (see the IDENTICAL column)")
        }
    }

    /// What the devices wrote by DMA and how it was tracked.
    static func dmaText(_ result: LoopbackResult) -> String {
        let written = result.deviceDMA.map { "\($0.name) wrote \($0.pages) pages" + ($0.failure.map { " (FAILED: \($0))" } ?? "") }
        return (written.isEmpty ? "" : written.joined(separator: ", ") + "; tracked by ")
            + Report.dirtyTrackingText(result.statistics.dirtyTracking)
    }

    /// A line on standard output, flushed at once (the runs take seconds each).
    private func say(_ line: String) {
        print(line)
        fflush(nil)
    }

    static func ms(_ value: Double?) -> String {
        value.map { Units.duration(.microseconds(Int64($0 * 1000))) } ?? "-"
    }

    static func table(_ outcomes: [Outcome], repeats: Int, configuration: ExampleMachineConfiguration) -> String {
        let predictions = Report.predictions.filter { $0.column != nil }
        var rows = [["RUN", "ACK", "MULTIFD", "DOWNTIME"] + predictions.compactMap(\.column) + ["TOTAL", "BYTES", "IDENTICAL"]]
        for o in outcomes {
            rows.append(
                [
                    o.scenario.name, o.scenario.switchoverAck ? "on" : "off",
                    o.scenario.multifdChannels == 0 ? "off" : "\(o.scenario.multifdChannels) ch", ms(o.downtime)
                ] + predictions.map { ms(o.predicted($0.of)) } + [
                    ms(o.total), o.bytes.map { Units.bytes(UInt64($0)) } ?? "-", o.verified ? "yes" : "NO"
                ])
        }
        var lines = Report.table(rows, rightAligned: [3, 4, 5, 6, 7, 8, 9])
        lines.append("")
        lines.append(
            "Medians of \(repeats) run\(repeats == 1 ? "" : "s") per row. DOWNTIME: guest stopped on the source until the destination's SHUT;"
        )
        lines.append(
            "PREDICTED: at the switchover decision, in parts: TRANSFER, pending / bandwidth (QEMU's whole formula); BACKLOG, the time")
        lines.append(
            "the destination still needed for what it had received; FINAL LOAD, its load time for the final data (multifd devices in parallel)."
        )
        lines.append(contentsOf: interpretation(outcomes, configuration: configuration))
        #if DEBUG
        lines.append("(A debug build: the simulated devices' byte generation and hashing are slow here and lengthen every")
        lines.append("downtime; `swift run -c release switchover demo` shows the time the engine itself takes.)")
        #endif
        return lines.joined(separator: "\n")
    }

    /// A sentence on what the ack changed, beside QEMU's published figure.
    static func interpretation(_ outcomes: [Outcome], configuration: ExampleMachineConfiguration) -> [String] {
        guard let off = outcomes.first(where: { !$0.scenario.switchoverAck && $0.scenario.multifdChannels == 0 })?.downtime,
            let on = outcomes.first(where: { $0.scenario.switchoverAck && $0.scenario.multifdChannels == 0 })?.downtime,
            on > 0
        else { return [] }
        let load = configuration.devices.map(\.loadCost).reduce(.zero, +)
        let loadMs = Units.milliseconds(load)
        var lines = [""]
        if loadMs == 0 {
            lines.append(
                "No device here costs the destination time to load its initial data, so switchover-ack has nothing to move "
                    + "out of the downtime (\(ms(off)) without, \(ms(on)) with).")
        } else if off - on >= loadMs / 2 {
            lines.append(
                "Switchover-ack cut the downtime from \(ms(off)) to \(ms(on)) (\(Units.fixed(off / on, digits: 1))x): the destination's "
                    + "\(Units.duration(load)) load of the devices' initial data now runs while the guest still runs on the source.")
        } else if outcomes.allSatisfy({ $0.results.allSatisfy(\.statistics.usedExtensions) }) {
            lines.append(
                "Switchover-ack made little difference here (\(ms(off)) without, \(ms(on)) with): without it, the destination's load "
                    + "backlog reports held the source until the \(Units.duration(load)) initial load was done; a source without "
                    + "Switchover's extensions (QEMU's rule) stops the guest during that load.")
        } else {
            lines.append(
                "Switchover-ack made little difference here (\(ms(off)) without, \(ms(on)) with): the destination had finished its "
                    + "\(Units.duration(load)) initial load before the source was ready to switch over (the rest of the pre-copy took longer)."
            )
        }
        lines.append(
            "Published (QEMU 8.1, one mlx5 VF with 300 MB of state): 1900 ms without, 420 ms with switchover-ack (4.5x); "
                + "the 1480 ms difference is the destination's resource allocation.")
        if let multifd = outcomes.first(where: { $0.scenario.switchoverAck && $0.scenario.multifdChannels > 0 }),
            let parallel = multifd.downtime, parallel > 0
        {
            let single = on
            let channels = multifd.scenario.multifdChannels
            lines.append("")
            if single - parallel >= single / 10 {
                lines.append(
                    "Multifd (\(channels) channels) cut it from \(ms(single)) to \(ms(parallel)) (\(Units.fixed(single / parallel, digits: 1))x): "
                        + "the devices' final data was read, sent and loaded in parallel instead of one device after the other.")
            } else {
                lines.append(
                    "Multifd (\(channels) channels) changed little here (\(ms(single)) without, \(ms(parallel)) with): "
                        + "too little device data is left at the switchover for parallel channels to matter.")
            }
            lines.append("Published (QEMU 10.0, 4 ConnectX-7 VFs, 6 channels): 1900 ms without multifd, 1095 ms with it (1.7x).")
        }
        return lines
    }

    /// One row of `--json`: the medians, the worst run (downtime, prediction error), and every run.
    static func json(_ o: Outcome) -> JSONValue {
        .object(
            [
                ("name", .string(o.scenario.name)),
                ("switchoverAck", .bool(o.scenario.switchoverAck)),
                ("multifdChannels", .int(o.scenario.multifdChannels)),
                ("downtimeMs", .optional(o.downtime))
            ] + Report.predictions.map { ($0.key, .optional(o.predicted($0.of))) } + [
                ("maxDowntimeMs", .optional(o.worstDowntime)),
                ("maxPredictionError", .optional(o.worstPredictionError)),
                (
                    "perRun",
                    .array(
                        o.results.map { r in
                            .object([("downtimeMs", Report.ms(r.statistics.downtime))] + Report.predictionsJSON(r.statistics.decision))
                        })
                ),
                ("totalMs", .optional(o.total)),
                ("bytes", o.bytes.map { .int(Int($0)) } ?? .null),
                ("verified", .bool(o.verified)),
                ("dirtyTracking", Report.dirtyTrackingJSON(o.results.first?.statistics.dirtyTracking)),
                ("repeats", .int(o.results.count))
            ])
    }

    static func json(_ outcomes: [Outcome]) -> JSONValue {
        var members: [(String, JSONValue)] = [("runs", .array(outcomes.map(json)))]
        if let first = outcomes.first?.results.first {
            members.append(
                (
                    "runState",
                    .object([
                        ("source", .array(first.sourceLifecycle.map { .string($0.description) })),
                        ("destination", .array(first.destinationLifecycle.map { .string($0.description) }))
                    ])
                ))
        }
        members.append(("machine", .string(HostInfo.summary)))
        return .object(members)
    }
}
