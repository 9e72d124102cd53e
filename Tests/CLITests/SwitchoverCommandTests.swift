import Foundation
import TestSupport
import Testing

/// A child process whose output is collected on a thread of its own while it runs.
final class RunningProduct: Sendable {
    private let pending: ChildProcess.Pending

    init(_ name: String, _ arguments: [String], limit: Duration = .seconds(120)) throws {
        pending = try ChildProcess(BuiltProduct.url(name).path, arguments).collect(limit: limit)
    }

    /// Waits for the exit and both pipes' end; a process still running after the limit is
    /// killed (a hung migration fails the test instead of hanging it).
    func finish() async -> BuiltProduct.Result {
        await pending.value
    }
}

/// `switchover migrate`, `incoming` and `demo` run as the built binary.
@Suite struct SwitchoverCommandTests {
    static let devices = [
        "--device", "mlx5:state=2MiB,initial=1MiB,load=20ms", "--device", "vfio-pci:state=256KiB,initial=64KiB",
        "--device", "mtty:ports=2"
    ]
    /// A generous downtime limit: on a loaded machine a debug build's measured bandwidth can be
    /// low enough that 300 ms never fits the final data, and the migration would iterate on.
    static let machine = ["--memory", "4MiB", "--dirty-rate", "1MiB/s", "--downtime-limit", "2s"] + devices

    static func socketPath() -> String {
        // Short: a Unix socket path has at most 107 bytes.
        "/tmp/switchover-test-\(UUID().uuidString.prefix(8)).sock"
    }

    static func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    /// Both ends as two processes over a Unix socket; the source started first keeps trying.
    static func migrate(extra: [String] = [], json: Bool = true) async throws -> (
        source: BuiltProduct.Result, destination: BuiltProduct.Result
    ) {
        let path = socketPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let output = json ? ["--json"] : []
        let source = try RunningProduct(
            "switchover", ["migrate", "--to", "unix:\(path)", "--connect-timeout", "30s"] + machine + extra + output)
        let destination = try RunningProduct("switchover", ["incoming", "--listen", "unix:\(path)"] + machine + extra + output)
        return (await source.finish(), await destination.finish())
    }

    @Test(arguments: [[], ["--switchover-ack"], ["--switchover-ack", "--multifd-channels", "2"]])
    func migrateAndIncomingAgreeOnEveryDigest(extra: [String]) async throws {
        let (source, destination) = try await Self.migrate(extra: extra)
        try #require(source.status == 0, "source: \(source.stderr)")
        try #require(destination.status == 0, "destination: \(destination.stderr)")
        let sent = try Self.object(source.stdout)
        let received = try Self.object(destination.stdout)
        #expect(sent["role"] as? String == "source")
        #expect(received["role"] as? String == "destination")
        #expect(sent["switchoverAck"] as? Bool == !extra.isEmpty)
        for key in ["totalMs", "downtimeMs"] {
            #expect(sent[key] is Double || sent[key] is Int, "\(key)")
        }
        // No prediction when the source switched over before its first bandwidth measurement.
        for key in ["predictedDowntimeMs", "predictedDowntimeQEMUMs", "predictedTransferMs", "predictedBacklogMs", "predictedFinalLoadMs"] {
            #expect(sent[key] is Double || sent[key] is Int || sent[key] is NSNull, "\(key)")
        }
        // The parts add up to the prediction.
        if let total = sent["predictedDowntimeMs"] as? Double, let t = sent["predictedTransferMs"] as? Double,
            let b = sent["predictedBacklogMs"] as? Double, let f = sent["predictedFinalLoadMs"] as? Double
        {
            #expect(abs(total - (t + b + f)) < 0.01, "\(total) = \(t) + \(b) + \(f)")
        }
        #expect((sent["bytes"] as? Int ?? 0) > 1 << 20)
        #expect(sent["bytes"] as? Int == received["bytes"] as? Int)
        let channels = extra.contains("--multifd-channels") ? 2 : 0
        #expect(sent["multifdChannels"] as? Int == channels)
        #expect(received["multifdChannels"] as? Int == channels)
        #expect(((sent["multifdBytes"] as? Int) ?? 0 > 0) == (channels > 0))
        let handlers = try #require(sent["handlers"] as? [[String: Any]])
        #expect(handlers.compactMap { $0["idstr"] as? String } == ["ram", "0000:00:01.0/vfio", "0000:00:02.0/vfio", "0000:00:03.0/vfio"])
        let ack = extra.isEmpty ? "notNeeded" : "acknowledged"
        #expect(handlers.dropFirst().allSatisfy { $0["ack"] as? String == ack })
        // Byte-identical: the destination's RAM and each device's loaded stream equal the source's.
        let left = try #require(sent["digests"] as? [String: Any])
        let arrived = try #require(received["digests"] as? [String: Any])
        #expect(left["ram"] as? String != nil)
        #expect(left["ram"] as? String == arrived["ram"] as? String)
        let leftDevices = try #require(left["devices"] as? [[String: Any]])
        let arrivedDevices = try #require(arrived["devices"] as? [[String: Any]])
        #expect(leftDevices.count == 3)
        try #require(arrivedDevices.count == leftDevices.count, "zip would drop devices")
        for (a, b) in zip(leftDevices, arrivedDevices) {
            #expect(a["name"] as? String == b["name"] as? String)
            #expect(a["hash"] as? String != nil)
            #expect(a["hash"] as? String == b["hash"] as? String)
            #expect(a["bytes"] as? Int == b["bytes"] as? Int)
        }
        // Without a terminal the progress is plain lines on standard error.
        #expect(source.stderr.contains("iterating"))
        #expect(!source.stderr.contains("\r"))
        #expect(destination.stderr.hasPrefix("listening on unix:"))
    }

    @Test func textReportShowsDowntimeHandlersAndDigests() async throws {
        let (source, destination) = try await Self.migrate(extra: ["--switchover-ack", "--no-progress"], json: false)
        try #require(source.status == 0 && destination.status == 0, "\(source.stderr)\n\(destination.stderr)")
        #expect(source.stdout.hasPrefix("migrated to unix:"))
        #expect(source.stdout.contains("  downtime "))
        #expect(source.stdout.contains("0000:00:01.0/vfio"))
        #expect(source.stdout.contains("acknowledged"))
        #expect(source.stderr.isEmpty)
        #expect(destination.stdout.hasPrefix("received on unix:"))
        // The digest lines of both ends are the same lines.
        func digestLines(_ text: String) -> [Substring] {
            text.split(separator: "\n").drop { !$0.contains("digests of what") }.dropFirst().map { $0 }
        }
        #expect(digestLines(source.stdout).count == 4)
        #expect(digestLines(source.stdout) == digestLines(destination.stdout))
    }

    @Test func aDestinationWithOtherDevicesFailsBothEndsWithStatusOne() async throws {
        let path = Self.socketPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let source = try RunningProduct(
            "switchover", ["migrate", "--to", "unix:\(path)", "--connect-timeout", "30s", "--no-progress"] + Self.machine)
        let destination = try RunningProduct(
            "switchover",
            [
                "incoming", "--listen", "unix:\(path)", "--no-progress", "--memory", "4MiB",
                "--device", "mlx5:state=2MiB,initial=1MiB"
            ])
        let s = await source.finish()
        let d = await destination.finish()
        #expect(s.status == 1)
        #expect(d.status == 1)
        #expect(s.stderr.hasPrefix("switchover migrate: "))
        #expect(d.stderr.contains("switchover incoming: "))
    }

    @Test func aMigrationThatCannotCompleteInTimeIsCancelled() async throws {
        // 8 MiB of stop-copy data cannot fit a 1 ms downtime at 1 MiB/s (QEMU's avail-switchover-bandwidth).
        let options = ["--memory", "1MiB", "--device", "vfio-pci:state=8MiB,initial=0", "--downtime-limit", "1ms", "--no-progress"]
        // --timeout is real time from the source's start. Whatever it is, every run must end
        // with the timeout's message and status 1 on both ends. On a loaded machine (or under the
        // sanitizers, where starting a process takes seconds) it can fire before the source
        // iterates, which says nothing about convergence: such a run is repeated with a timeout
        // four times longer, so the outcome does not depend on scheduling. The destination
        // listens before the source starts (its socket exists), so the source connects at once.
        var seconds = 5
        var iterating = false
        for _ in 0..<4 where !iterating {
            let path = Self.socketPath()
            defer { try? FileManager.default.removeItem(atPath: path) }
            let destination = try RunningProduct("switchover", ["incoming", "--listen", "unix:\(path)"] + options, limit: .seconds(600))
            try await Self.waitForFile(path)
            let source = try RunningProduct(
                "switchover",
                [
                    "migrate", "--to", "unix:\(path)", "--connect-timeout", "30s", "--timeout", "\(seconds)s",
                    "--switchover-bandwidth", "1MiB/s"
                ] + options, limit: .seconds(600))
            let s = await source.finish()
            let d = await destination.finish()
            #expect(s.status == 1)
            #expect(s.stderr.hasPrefix("switchover migrate: not completed within --timeout \(seconds)s ("), "\(s.stderr)")
            #expect(d.status == 1)
            iterating = s.stderr.hasPrefix("switchover migrate: not completed within --timeout \(seconds)s (iterating, ")
            seconds *= 4
        }
        #expect(iterating, "the timeout never fired while the source iterated")
    }

    /// Waits until `path` exists (a listener's socket file), checking every 20 ms, for at most
    /// a minute (a destination that never listens fails the test instead of hanging it).
    static func waitForFile(_ path: String) async throws {
        for _ in 0..<3000 where !FileManager.default.fileExists(atPath: path) {
            try await Task.sleep(for: .milliseconds(20))
        }
        try #require(FileManager.default.fileExists(atPath: path), "nothing listens at \(path)")
    }

    @Test func nothingListeningIsStatusOneWithOneErrorLine() async throws {
        let run = try await BuiltProduct.run(
            "switchover",
            [
                "migrate", "--to", "unix:\(Self.socketPath())", "--connect-timeout", "200ms",
                "--no-progress", "--memory", "1MiB"
            ])
        #expect(run.status == 1)
        #expect(run.stderr.hasPrefix("switchover migrate: "))
        #expect(run.stderr.split(separator: "\n").count == 1)
        #expect(run.stdout.isEmpty)
    }

    @Test(arguments: [
        ["migrate", "--to", "tcp:localhost:4444", "--device", "nic:state=1MiB"],
        ["migrate", "--to", "tcp:localhost:4444", "--device", "mlx5:state=1MiB,initial=2MiB"],
        ["migrate", "--to", "smoke-signals:4444"],
        ["migrate", "--to", "tcp:localhost:4444", "--downtime-limit", "300"],
        ["migrate", "--to", "tcp:localhost:4444", "--memory", "lots"],
        ["migrate", "--to", "tcp:localhost:4444", "--multifd-channels", "256"],
        ["migrate"],
        ["incoming", "--listen", "tcp:localhost", "--device", "mlx5"],
        ["demo", "--device", "mtty:state=1MiB"],
        ["demo", "--repeat", "0"]
    ])
    func badUsageIsStatusTwo(arguments: [String]) async throws {
        let run = try await BuiltProduct.run("switchover", arguments)
        #expect(run.status == 2, "\(run.stderr)")
        #expect(run.stderr.hasPrefix("Error: "))
        #expect(run.stdout.isEmpty)
    }

    @Test func badDeviceSpecNamesTheSpecAndTheProblem() async throws {
        let run = try await BuiltProduct.run(
            "switchover", ["incoming", "--listen", "tcp:0.0.0.0:0", "--device", "mlx5:state=64MiB,load=fast"])
        #expect(run.status == 2)
        #expect(run.stderr.hasPrefix("Error: --device mlx5:state=64MiB,load=fast: load=fast is not a duration"))
    }

    @Test func demoJSONHasOneEntryPerScenario() async throws {
        let run = try await BuiltProduct.run("switchover", ["demo", "--quick", "--json", "--downtime-limit", "2s"])
        try #require(run.status == 0, "\(run.stderr)")
        let object = try Self.object(run.stdout)
        let runs = try #require(object["runs"] as? [[String: Any]])
        #expect(runs.map { $0["switchoverAck"] as? Bool } == [false, false, true, true])
        #expect(runs.map { $0["multifdChannels"] as? Int } == [0, 4, 0, 4])
        #expect(runs.map { $0["name"] as? String } == ["ack off", "ack off, multifd", "ack on", "ack on, multifd"])
        for entry in runs {
            #expect(entry["name"] is String)
            #expect(entry["multifdChannels"] is Int)
            #expect(entry["bytes"] is Int)
            #expect(entry["verified"] as? Bool == true)
            for key in ["downtimeMs", "totalMs"] {
                #expect(entry[key] is Double || entry[key] is Int, "\(key)")
            }
            for key in ["predictedDowntimeMs", "predictedTransferMs", "predictedBacklogMs", "predictedFinalLoadMs", "maxPredictionError"] {
                #expect(entry[key] is Double || entry[key] is Int || entry[key] is NSNull, "\(key)")
            }
            // Every run with its measured downtime beside the prediction and its parts.
            let perRun = try #require(entry["perRun"] as? [[String: Any]])
            #expect(perRun.count == 1)
            #expect(perRun.allSatisfy { $0["downtimeMs"] is Double && $0.keys.contains("predictedBacklogMs") })
        }
        let runState = try #require(object["runState"] as? [String: Any])
        #expect(
            runState["source"] as? [String] == ["vCPUs stop", "0000:00:01.0 PRE_COPY→PRE_COPY_P2P", "0000:00:01.0 PRE_COPY_P2P→STOP_COPY"])
        #expect(
            runState["destination"] as? [String] == ["0000:00:01.0 STOP→RUNNING_P2P", "0000:00:01.0 RUNNING_P2P→RUNNING", "vCPUs start"])
        #expect(run.stderr.isEmpty)
    }

    @Test func demoTableReportsEachScenarioAndTheAnchor() async throws {
        let run = try await BuiltProduct.run("switchover", ["demo", "--quick", "--downtime-limit", "2s"])
        try #require(run.status == 0, "\(run.stderr)")
        let lines = run.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("switchover demo: both ends on TCP loopback") == true)
        #expect(lines.contains("  run 1/1 ack on: ") == false)
        #expect(lines.contains { $0.hasPrefix("  run 1/1 ack on: downtime ") && $0.hasSuffix("byte-identical") })
        #expect(lines.contains("      source:      vCPUs stop, 0000:00:01.0 PRE_COPY→PRE_COPY_P2P, 0000:00:01.0 PRE_COPY_P2P→STOP_COPY"))
        #expect(lines.contains("      destination: 0000:00:01.0 STOP→RUNNING_P2P, 0000:00:01.0 RUNNING_P2P→RUNNING, vCPUs start"))
        let table = lines.drop { !$0.hasPrefix("RUN ") }
        #expect(table.first?.contains("PREDICTED  = TRANSFER  + BACKLOG  + FINAL LOAD") == true, "\(table.first ?? "")")
        #expect(table.contains { $0.hasPrefix("ack off") && $0.hasSuffix("yes") })
        #expect(table.contains { $0.hasPrefix("ack on") && $0.hasSuffix("yes") })
        #expect(table.contains { $0.hasPrefix("ack on, multifd") && $0.contains("4 ch") && $0.hasSuffix("yes") })
        #expect(run.stdout.contains("1900 ms"))
        #expect(run.stderr.isEmpty)
    }

    @Test(arguments: ["migrate", "incoming", "demo"])
    func helpDescribesTheCommand(command: String) async throws {
        let run = try await BuiltProduct.run("switchover", [command, "--help"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("OVERVIEW: "))
        #expect(run.stdout.contains("--device <spec>"))
        #expect(run.stdout.contains("--json"))
        if command != "demo" { #expect(run.stdout.contains("--switchover-ack") && run.stdout.contains("--multifd-channels")) }
    }

    @Test func rootHelpListsEverySubcommand() async throws {
        let run = try await BuiltProduct.run("switchover", ["--help"])
        #expect(run.status == 0)
        for command in ["migrate", "incoming", "demo", "inspect"] { #expect(run.stdout.contains("  \(command) "), "\(command)") }
    }
}
