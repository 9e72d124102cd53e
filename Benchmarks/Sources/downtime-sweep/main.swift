// downtime-sweep: the downtime scenarios of the benchmarks, run several times each, written as
// JSON for scripts/plot-figures.py (`make plots`).
//
//   downtime-sweep [--repeat N] [--output FILE]
//
// Load-cost sweep: switchover-ack off under QEMU's decision, off under ours, and on, interleaved;
// device-count sweep: ack on; the
// channel sweep once the engine has multifd (MigrationScenarios.channelCounts).
import ExampleVM
import Foundation
import MigrationScenarios

var repeats = 5
var output: String?
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--repeat":
        guard let n = arguments.popFirst().flatMap({ Int($0) }), n > 0 else {
            FileHandle.standardError.write(Data("downtime-sweep: --repeat needs a positive number\n".utf8))
            exit(2)
        }
        repeats = n
    case "--output":
        output = arguments.popFirst()
    default:
        FileHandle.standardError.write(Data("usage: downtime-sweep [--repeat N] [--output FILE]\n".utf8))
        exit(2)
    }
}

func summary(_ samples: [MigrationScenarios.Sample]) -> [String: Any] {
    let downtimes = samples.map(\.downtimeMs)
    return [
        "downtimeMs": downtimes.map { ($0 * 10).rounded() / 10 },
        "medianMs": MigrationScenarios.median(downtimes),
        "minMs": downtimes.min() ?? 0,
        "maxMs": downtimes.max() ?? 0,
        "predictedMedianMs": MigrationScenarios.median(samples.map(\.predictedMs)),
        "predictedQEMUMedianMs": MigrationScenarios.median(samples.map(\.predictedQEMUMs)),
        "totalMedianMs": MigrationScenarios.median(samples.map(\.totalMs)),
        "verified": samples.allSatisfy(\.verified)
    ]
}

func ms(_ value: Double) -> String { Units.fixed(value, digits: 0) + " ms" }

do {
    print("downtime-sweep: \(repeats) runs per point on \(HostInfo.summary)")
    var loadPoints: [[String: Any]] = []
    print("\nDowntime vs destination load cost of the mlx5 initial data (median of \(repeats)):")
    print("  LOAD     ACK OFF, QEMU'S DECISION   ACK OFF   ACK ON   QEMU OFF/ON")
    for load in MigrationScenarios.loadCosts {
        let machine = MigrationScenarios.loadCostMachine(loadMs: load)
        // Switchover-ack off under QEMU's decision, off under ours (held for the destination's
        // backlog), on; the order rotates so that none gains from another's warm-up.
        enum Run: CaseIterable { case offQEMU, off, on }
        var samples: [Run: [MigrationScenarios.Sample]] = [:]
        for i in 0..<repeats {
            let order = Run.allCases
            for run in order[(i % 3)...] + order[..<(i % 3)] {
                samples[run, default: []].append(
                    try await MigrationScenarios.run(machine, switchoverAck: run == .on, qemuDecision: run == .offQEMU))
            }
        }
        let median = { (run: Run) in MigrationScenarios.median(samples[run, default: []].map(\.downtimeMs)) }
        let (q, a, b) = (median(.offQEMU), median(.off), median(.on))
        print(
            "  " + "\(load) ms".padding(toLength: 7, withPad: " ", startingAt: 0) + ms(q).leftPad(26) + ms(a).leftPad(10)
                + ms(b).leftPad(9) + (Units.fixed(q / max(b, 0.001), digits: 1) + "x").leftPad(14))
        loadPoints.append([
            "loadMs": load, "ackOffQEMU": summary(samples[.offQEMU, default: []]), "ackOff": summary(samples[.off, default: []]),
            "ackOn": summary(samples[.on, default: []])
        ])
    }

    var countPoints: [[String: Any]] = []
    let parallel = MigrationScenarios.deviceCountChannels
    print("\nDowntime vs device count, switchover-ack on, multifd off and \(parallel) channels (median of \(repeats)):")
    print("  DEVICES  MULTIFD OFF  MULTIFD \(parallel)   OFF/ON")
    var baseline: Double?
    for count in MigrationScenarios.deviceCounts {
        let machine = MigrationScenarios.deviceCountMachine(count)
        var off: [MigrationScenarios.Sample] = []
        var on: [MigrationScenarios.Sample] = []
        for i in 0..<repeats {
            for channels in i % 2 == 0 ? [0, parallel] : [parallel, 0] {
                let sample = try await MigrationScenarios.run(machine, switchoverAck: true, channels: channels)
                if channels == 0 { off.append(sample) } else { on.append(sample) }
            }
        }
        let (a, b) = (MigrationScenarios.median(off.map(\.downtimeMs)), MigrationScenarios.median(on.map(\.downtimeMs)))
        baseline = baseline ?? a
        print(
            "  \(count)".padding(toLength: 9, withPad: " ", startingAt: 0) + ms(a).leftPad(11) + ms(b).leftPad(11)
                + (Units.fixed(a / max(b, 0.001), digits: 2) + "x").leftPad(9)
                + "   (multifd off: \(Units.fixed(a / max(baseline ?? a, 0.001), digits: 2))x the 1-device downtime)")
        countPoints.append(["devices": count, "ackOn": summary(off), "ackOnMultifd": summary(on), "multifdChannels": parallel])
    }

    var channelPoints: [[String: Any]] = []
    if MigrationScenarios.channelCounts.isEmpty {
        print("\nDowntime vs multifd channels: not measured, the engine does not drive multifd channels yet.")
    } else {
        print("\nDowntime vs multifd channels, 4 devices, switchover-ack on (median of \(repeats)):")
        for channels in MigrationScenarios.channelCounts {
            var samples: [MigrationScenarios.Sample] = []
            for _ in 0..<repeats {
                samples.append(
                    try await MigrationScenarios.run(MigrationScenarios.deviceCountMachine(4), switchoverAck: true, channels: channels))
            }
            print("  \(channels) channels" + ms(MigrationScenarios.median(samples.map(\.downtimeMs))).leftPad(10))
            channelPoints.append(["channels": channels, "ackOn": summary(samples)])
        }
    }

    let result: [String: Any] = [
        "machine": HostInfo.summary,
        "date": ISO8601DateFormatter().string(from: Date()),
        "repeats": repeats,
        "loadCost": [
            "vm": "16 MiB RAM; "
                + MigrationScenarios.loadCostMachine(loadMs: 0).devices.map(\.description).joined(separator: ", ")
                .replacingOccurrences(of: "initial=16MiB", with: "initial=16MiB,load=X"),
            "points": loadPoints
        ],
        "deviceCount": [
            "vm": "16 MiB RAM; N x " + (MigrationScenarios.deviceCountMachine(1).devices.first?.description ?? ""),
            "points": countPoints
        ],
        "channels": [
            "available": !MigrationScenarios.channelCounts.isEmpty,
            "vm": "16 MiB RAM; 4 x " + (MigrationScenarios.deviceCountMachine(1).devices.first?.description ?? ""),
            "points": channelPoints
        ]
    ]
    let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
    if let output {
        try data.write(to: URL(fileURLWithPath: output))
        print("\nwrote \(output)")
    } else {
        print(String(decoding: data, as: UTF8.self))
    }
} catch {
    FileHandle.standardError.write(Data("downtime-sweep: \(error)\n".utf8))
    exit(1)
}

extension String {
    func leftPad(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
