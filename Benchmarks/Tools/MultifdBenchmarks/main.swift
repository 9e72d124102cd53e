// Downtime of a migration with 4 simulated mlx5 VFs, over 0 (the main channel only), 2, 4 and
// 6 multifd channels, printed as a table with the ratio to 0 channels, beside QEMU 10.0's
// anchor (4 ConnectX-7 VFs: 1900 ms → 1095 ms with 6 channels, reference anchors A2).
//
// A plain executable rather than an ordo-one benchmark: the figure is one downtime per
// migration, compared across configurations, not a throughput loop.
//
//   cd Benchmarks && swift run -c release MultifdBenchmarks [--runs 5] [--state-mib 48]
//       [--read-ms-per-mib 3] [--load-ms 150] [--channels 0,2,4,6] [--precopy] [--bandwidth-mib N]
//
// --precopy adds rows with MigrationParameters.multifdPrecopy (pre-copy data over the channels
// too); --bandwidth-mib caps every row's live phase (the fair share per device applies then).
//
// Each device: PRE_COPY initial image, then a stop-copy image of --state-mib MiB read at
// --read-ms-per-mib (the device's save speed) and loaded with a --load-ms firmware cost on the
// destination (mlx5 LOAD_VHCA_STATE); switchover-ack on, as in QEMU's measurements. Downtime
// runs from stopVM to the destination's SHUT(0) (it includes the destination's load).
import Foundation
import MLX5Handler
import MigrationCore
import MigrationStream
import VFIO
import VFIOPCIHandler
import VFIOSimulator

struct Options {
    var runs = 5
    var stateMiB = 48
    var initialMiB = 8
    var readMsPerMiB = 3.0
    var loadMs = 150
    var devices = 4
    var channels = [0, 2, 4, 6]
    var precopy = false
    /// A bandwidth cap for every row (MiB/s); nil = none.
    var bandwidthMiB: UInt64?

    init(_ args: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw BenchError.usage("\(args[i - 1]) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--runs": runs = Int(try value()) ?? runs
            case "--state-mib": stateMiB = Int(try value()) ?? stateMiB
            case "--initial-mib": initialMiB = Int(try value()) ?? initialMiB
            case "--read-ms-per-mib": readMsPerMiB = Double(try value()) ?? readMsPerMiB
            case "--load-ms": loadMs = Int(try value()) ?? loadMs
            case "--devices": devices = Int(try value()) ?? devices
            case "--channels": channels = try value().split(separator: ",").compactMap { Int($0) }
            case "--precopy": precopy = true
            case "--bandwidth-mib": bandwidthMiB = UInt64(try value())
            default: throw BenchError.usage("unknown option \(args[i])")
            }
            i += 1
        }
        guard runs > 0, stateMiB > 0, devices > 0, !channels.isEmpty else { throw BenchError.usage("bad values") }
    }
}

enum BenchError: Error, CustomStringConvertible {
    case usage(String)
    case mismatch(String)
    var description: String {
        switch self {
        case .usage(let s): "usage: \(s)"
        case .mismatch(let s): "state mismatch: \(s)"
        }
    }
}

final class BenchVM: VMController, @unchecked Sendable {
    private let lock = NSLock()
    private var running: Bool
    init(running: Bool) { self.running = running }
    var isRunning: Bool { lock.withLock { running } }
    func stopVM() throws { lock.withLock { running = false } }
    func resumeVM() throws { lock.withLock { running = true } }
}

struct RunResult {
    var downtime: Duration
    var total: Duration
    var multifdBytes: UInt64
}

/// One migration with fresh devices; checks the destination absorbed exactly what the source produced.
func migrate(_ o: Options, channels: Int, precopyOverChannels: Bool) async throws -> RunResult {
    let sourceRegistry = HandlerRegistry()
    let destinationRegistry = HandlerRegistry()
    var pairs: [(SimulatedVFIODevice, SimulatedVFIODevice)] = []
    for n in 0..<o.devices {
        var config = SimulatedVFIOConfiguration.mlx5(
            name: "0000:3b:00.\(n + 1)", imageSize: UInt64(o.initialMiB) << 20, finalImageSize: UInt64(o.stateMiB) << 20,
            seed: UInt64(n + 1), loadCost: .init(initial: .milliseconds(o.loadMs / 4), final: .milliseconds(o.loadMs)))
        config.readTimePerMiB = .microseconds(Int64(o.readMsPerMiB * 1000))
        let s = try SimulatedVFIODevice(config)
        let d = try SimulatedVFIODevice(config)
        let sh = MLX5Module.makeHandler(device: s)
        let dh = MLX5Module.makeHandler(device: d)
        try sourceRegistry.register(sh, idstr: sh.identity.idstr, instanceID: 0, versionID: VFIOPCIHandler.sectionVersion)
        try destinationRegistry.register(dh, idstr: dh.identity.idstr, instanceID: 0, versionID: VFIOPCIHandler.sectionVersion)
        pairs.append((s, d))
    }
    var p = MigrationParameters()
    p.multifdChannels = channels
    p.multifdPrecopy = precopyOverChannels
    p.switchoverAck = true
    p.switchoverBandwidth = 100 << 30
    p.countDestinationLoadTime = false
    p.maxBandwidth = o.bandwidthMiB.map { $0 << 20 }
    let machine = MachineConfiguration(machineType: "pc-q35-10.0")
    let transport = SocketPairTransport()
    let source = MigrationSource(registry: sourceRegistry, vm: BenchVM(running: true), configuration: machine, parameters: p)
    let destination = MigrationDestination(
        registry: destinationRegistry, vm: BenchVM(running: false), configuration: machine, parameters: p)
    async let incoming = destination.run(from: transport)
    let stats = try await source.run(to: transport)
    _ = try await incoming
    for (n, (s, d)) in pairs.enumerated() where s.savedStreamDigest != d.loadedStreamDigest || d.loadedStreamDigest == nil {
        throw BenchError.mismatch("device \(n)")
    }
    return RunResult(downtime: stats.downtime ?? .zero, total: stats.totalTime, multifdBytes: stats.multifdBytes)
}

func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    let rank = p * Double(sorted.count - 1)
    let lo = Int(rank.rounded(.down))
    let hi = Int(rank.rounded(.up))
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - Double(lo))
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

let options: Options
do {
    options = try Options(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write("\(error)\n".data(using: .utf8) ?? Data())
    exit(2)
}

print(
    "Multifd downtime: \(options.devices) simulated mlx5 VFs, \(options.stateMiB) MiB stop-copy each "
        + "(+\(options.initialMiB) MiB pre-copy image), read \(options.readMsPerMiB) ms/MiB, load \(options.loadMs) ms; "
        + "\(options.runs) runs per row, p25 and median in ms"
        + (options.bandwidthMiB.map { ", live phase capped at \($0) MiB/s" } ?? ""))
var rows: [(label: String, p25: Double, median: Double, total: Double)] = []
var configurations: [(String, Int, Bool)] = options.channels.map { ($0 == 0 ? "0 (main only)" : "\($0)", $0, false) }
if options.precopy {
    for c in options.channels where c > 0 { configurations.append(("\(c) + precopy", c, true)) }
}
for (label, channels, precopy) in configurations {
    var downtimes: [Double] = []
    var totals: [Double] = []
    for _ in 0..<options.runs {
        do {
            let r = try await migrate(options, channels: channels, precopyOverChannels: precopy)
            downtimes.append(ms(r.downtime))
            totals.append(ms(r.total))
        } catch {
            print("channels \(label): migration failed: \(error)")
            exit(1)
        }
    }
    rows.append((label, percentile(downtimes, 0.25), percentile(downtimes, 0.5), percentile(totals, 0.5)))
}
let base = rows.first { $0.label.hasPrefix("0") }?.median ?? rows[0].median
print("")
print("| channels        | downtime p25 | downtime median | ratio to 0 | total median |")
print("|-----------------|-------------:|----------------:|-----------:|-------------:|")
for r in rows {
    print(
        "| \(r.label.padding(toLength: 15, withPad: " ", startingAt: 0)) | \(pad(String(format: "%.0f", r.p25), 12)) | "
            + "\(pad(String(format: "%.0f", r.median), 15)) | \(pad(String(format: "%.2f", r.median / base), 10)) | "
            + "\(pad(String(format: "%.0f", r.total), 12)) |")
}
print("")
print("QEMU 10.0 anchor (A2, 4 × ConnectX-7 VF, p25 of 70-100 runs): 0 → 1900 ms, 6 channels → 1095 ms (ratio 0.58).")
