// Downtime of whole migrations (both ends in this process over TCP loopback; ExampleVM's
// LoopbackMigration with simulated mlx5 VFs):
//
// - vs the destination's load cost of the device's initial data (0, 100, 200, 400 ms), with
//   switchover-ack off and on in the same iteration; "off / on %" is the ratio (QEMU 8.1's
//   published figure for a 300 MB mlx5 VF: 1900 ms / 420 ms = 452 %).
// - vs the number of devices (1, 2, 4; ack on), each measured in the same iteration as the
//   one-device baseline; "N vs 1 %" is the ratio (QEMU 10.0 multifd off: 487, 859, 1900 ms).
// - vs the number of multifd channels (0, 1, 2, 4, 8) with 4 devices, each measured in the same
//   iteration as multifd off; "best vs 0 channels %" is the ratio (QEMU 10.0, 4 VFs: 1095 ms with
//   6 channels vs 1900 ms off = 58 %).
// - with TLS 1.3 (mutual x509 authentication on the main stream, return path and channels)
//   vs plaintext, the demo VM (mlx5 initial data loaded in 100 ms, switchover-ack on), in the
//   same iteration; "TLS / plaintext %" is the ratio.
//
// Every migration checks that RAM and each device arrived byte-identical, or the benchmark fails.
import Benchmark
import Foundation
import MigrationScenarios

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock],
        warmupIterations: 1,
        maxDuration: .seconds(15),
        maxIterations: 7
    )

    // Ack off under QEMU's decision (the published figures' rule): ours would also hold the
    // switchover for the destination's reported backlog, which is what the ack buys QEMU.
    let ackOff = BenchmarkMetric.custom("downtime ack off, QEMU's decision (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    let ackOn = BenchmarkMetric.custom("downtime ack on (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    let offOverOn = BenchmarkMetric.custom("ack off / on (%)", polarity: .prefersLarger, useScalingFactor: false)

    for load in MigrationScenarios.loadCosts {
        Benchmark(
            "Downtime: the demo VM, mlx5 initial data loaded in \(load) ms, switchover-ack off (QEMU's decision) vs on",
            configuration: .init(metrics: [ackOff, ackOn, offOverOn])
        ) { benchmark in
            let machine = MigrationScenarios.loadCostMachine(loadMs: load)
            for i in benchmark.scaledIterations {
                // Alternate which goes first, so neither gains from the other's warm-up.
                let first = try await MigrationScenarios.run(machine, switchoverAck: i % 2 == 1, qemuDecision: i % 2 == 0)
                let second = try await MigrationScenarios.run(machine, switchoverAck: i % 2 == 0, qemuDecision: i % 2 == 1)
                let (off, on) = i % 2 == 0 ? (first, second) : (second, first)
                benchmark.measurement(ackOff, Int(off.downtimeMs.rounded()))
                benchmark.measurement(ackOn, Int(on.downtimeMs.rounded()))
                benchmark.measurement(offOverOn, Int((off.downtimeMs * 100 / max(on.downtimeMs, 0.001)).rounded()))
            }
        }
    }

    let counts = MigrationScenarios.deviceCounts
    let perCount = counts.map {
        BenchmarkMetric.custom("\($0) device\($0 == 1 ? "" : "s") (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    }
    let largestOverOne = BenchmarkMetric.custom("\(counts.last ?? 1) vs 1 device (%)", polarity: .prefersSmaller, useScalingFactor: false)
    Benchmark(
        "Downtime vs device count: \(counts.map(String.init).joined(separator: ", ")) mlx5 VFs of 17 MiB, switchover-ack on, multifd off",
        configuration: .init(metrics: perCount + [largestOverOne])
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            var downtimes: [Double] = []
            for count in counts {
                downtimes.append(
                    try await MigrationScenarios.run(MigrationScenarios.deviceCountMachine(count), switchoverAck: true).downtimeMs)
            }
            for (metric, value) in zip(perCount, downtimes) { benchmark.measurement(metric, Int(value.rounded())) }
            if let first = downtimes.first, let last = downtimes.last {
                benchmark.measurement(largestOverOne, Int((last * 100 / max(first, 0.001)).rounded()))
            }
        }
    }

    // Downtime vs multifd channels.
    let channels = MigrationScenarios.channelCounts
    if let baseline = channels.first {
        let perChannels = channels.map { BenchmarkMetric.custom("\($0) channels (ms)", polarity: .prefersSmaller, useScalingFactor: false) }
        let bestOverBaseline = BenchmarkMetric.custom(
            "best vs \(baseline) channels (%)", polarity: .prefersSmaller, useScalingFactor: false)
        Benchmark(
            "Downtime vs multifd channels: 4 mlx5 VFs of 17 MiB, switchover-ack on",
            configuration: .init(metrics: perChannels + [bestOverBaseline])
        ) { benchmark in
            let machine = MigrationScenarios.deviceCountMachine(4)
            for _ in benchmark.scaledIterations {
                var downtimes: [Double] = []
                for n in channels {
                    downtimes.append(try await MigrationScenarios.run(machine, switchoverAck: true, channels: n).downtimeMs)
                }
                for (metric, value) in zip(perChannels, downtimes) { benchmark.measurement(metric, Int(value.rounded())) }
                if let first = downtimes.first, let best = downtimes.min() {
                    benchmark.measurement(bestOverBaseline, Int((best * 100 / max(first, 0.001)).rounded()))
                }
            }
        }
    }

    let plainDowntime = BenchmarkMetric.custom("downtime plaintext (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    let tlsDowntime = BenchmarkMetric.custom("downtime TLS (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    let tlsOverPlain = BenchmarkMetric.custom("TLS / plaintext (%)", polarity: .prefersSmaller, useScalingFactor: false)
    let tlsTotal = BenchmarkMetric.custom("total TLS (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    let plainTotal = BenchmarkMetric.custom("total plaintext (ms)", polarity: .prefersSmaller, useScalingFactor: false)
    Benchmark(
        "Downtime: the demo VM (mlx5 initial data loaded in 100 ms, switchover-ack on) in TLS 1.3 vs plaintext",
        configuration: .init(metrics: [plainDowntime, tlsDowntime, tlsOverPlain, plainTotal, tlsTotal])
    ) { benchmark in
        let credentials = try BenchmarkTLS.makeCredentials()
        defer { try? FileManager.default.removeItem(atPath: credentials) }
        let secure = BenchmarkTLS.security(credentials)
        let machine = MigrationScenarios.loadCostMachine(loadMs: 100)
        for i in benchmark.scaledIterations {
            let first = try await MigrationScenarios.run(machine, switchoverAck: true, secure: i % 2 == 0 ? nil : secure)
            let second = try await MigrationScenarios.run(machine, switchoverAck: true, secure: i % 2 == 0 ? secure : nil)
            let (plain, tls) = i % 2 == 0 ? (first, second) : (second, first)
            benchmark.measurement(plainDowntime, Int(plain.downtimeMs.rounded()))
            benchmark.measurement(tlsDowntime, Int(tls.downtimeMs.rounded()))
            benchmark.measurement(tlsOverPlain, Int((tls.downtimeMs * 100 / max(plain.downtimeMs, 0.001)).rounded()))
            benchmark.measurement(plainTotal, Int(plain.totalMs.rounded()))
            benchmark.measurement(tlsTotal, Int(tls.totalMs.rounded()))
        }
    }
}
