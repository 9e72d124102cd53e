// Peak memory while migrating 1 GiB and 4 GiB of simulated device state (one generic VFIO
// device, a quarter of it pre-copy; both ends in this process over TCP loopback). The
// resident set's high-water mark (VmHWM) is reset before each migration through
// /proc/self/clear_refs and read after it; both figures are measured in the same iteration,
// and "4 GiB / 1 GiB (%)" is their ratio: memory must not grow with the state size (100 %).
// Its own benchmark target, so nothing else in the process moves the high-water mark.
import Benchmark
import MigrationScenarios

let benchmarks: @Sendable () -> Void = {
    let sizes = MigrationScenarios.stateSizes
    func label(_ bytes: UInt64) -> String { "\(bytes >> 30) GiB" }
    let peaks = sizes.map { BenchmarkMetric.custom("peak RSS, \(label($0)) (MiB)", polarity: .prefersSmaller, useScalingFactor: false) }
    let growth = sizes.map { BenchmarkMetric.custom("RSS growth, \(label($0)) (MiB)", polarity: .prefersSmaller, useScalingFactor: false) }
    let rates = sizes.map { BenchmarkMetric.custom("throughput, \(label($0)) (MB/s)", polarity: .prefersLarger, useScalingFactor: false) }
    let ratio = BenchmarkMetric.custom(
        "peak \(label(sizes.last ?? 0)) / \(label(sizes.first ?? 0)) (%)", polarity: .prefersSmaller, useScalingFactor: false)

    Benchmark(
        "Peak memory: migrating \(sizes.map(label).joined(separator: " and ")) of device state",
        configuration: .init(metrics: peaks + growth + rates + [ratio], warmupIterations: 0, maxDuration: .seconds(60), maxIterations: 2)
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            var peakBytes: [Double] = []
            for (i, size) in sizes.enumerated() {
                let sample = try await MigrationScenarios.peakMemory(stateBytes: size)
                peakBytes.append(Double(sample.peakBytes))
                benchmark.measurement(peaks[i], Int(sample.peakBytes >> 20))
                benchmark.measurement(growth[i], Int((sample.peakBytes &- min(sample.peakBytes, sample.baselineBytes)) >> 20))
                benchmark.measurement(rates[i], Int(Double(size) / sample.seconds / 1e6))
            }
            if let first = peakBytes.first, let last = peakBytes.last, first > 0 {
                benchmark.measurement(ratio, Int((last * 100 / first).rounded()))
            }
        }
    }
}
