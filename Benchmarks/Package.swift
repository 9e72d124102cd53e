// swift-tools-version:6.1
// Switchover's benchmarks: a package of its own, so the main build stays light.
// Run with `make bench` (or `swift package --allow-writing-to-package-directory benchmark` here).
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which differs between checkouts
// (a worktree, the main clone, CI's clone), so it is computed rather than spelled.
let root = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "SwitchoverBenchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"])
    ],
    targets: [
        // Wire-format throughput: VFIO-style 1 MiB DATA chunks in memory and over a Unix
        // socket, beside a raw read/write loop over the same socket.
        .executableTarget(
            name: "StreamBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "MigrationStream", package: root),
                .product(name: "MigrationCore", package: root),
                .product(name: "MigrationTLS", package: root),
                "MigrationScenarios"
            ],
            path: "Benchmarks/StreamBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The migrations the benchmarks and `make plots` measure (loopback, simulated mlx5 VFs).
        .target(
            name: "MigrationScenarios",
            dependencies: [
                .product(name: "ExampleVM", package: root),
                .product(name: "MigrationCore", package: root),
                .product(name: "MigrationTLS", package: root)
            ],
            path: "Sources/MigrationScenarios"
        ),
        // Downtime vs the destination's load cost (switchover-ack off and on), vs device count,
        // and with TLS vs without.
        .executableTarget(
            name: "MigrationBenchmarks",
            dependencies: [.product(name: "Benchmark", package: "benchmark"), "MigrationScenarios"],
            path: "Benchmarks/MigrationBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Peak RSS while migrating 1 GiB and 4 GiB of device state.
        .executableTarget(
            name: "MemoryBenchmarks",
            dependencies: [.product(name: "Benchmark", package: "benchmark"), "MigrationScenarios"],
            path: "Benchmarks/MemoryBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // `make plots`: runs the downtime sweeps and writes their results as JSON.
        .executableTarget(
            name: "downtime-sweep",
            dependencies: ["MigrationScenarios", .product(name: "ExampleVM", package: root)],
            path: "Sources/downtime-sweep"
        ),
        // Multifd downtime with 4 simulated mlx5 VFs over 0, 2, 4 and 6 channels, printed as a
        // table: a plain executable (one figure per migration), outside Benchmarks/ so the
        // benchmark plugin leaves it alone. `swift run -c release MultifdBenchmarks` here.
        .executableTarget(
            name: "MultifdBenchmarks",
            dependencies: [
                .product(name: "MigrationCore", package: root),
                .product(name: "MigrationStream", package: root),
                .product(name: "VFIO", package: root),
                .product(name: "VFIOSimulator", package: root),
                .product(name: "VFIOPCIHandler", package: root),
                .product(name: "MLX5Handler", package: root)
            ],
            path: "Tools/MultifdBenchmarks"
        ),
        // The downtime limit as a promise: the four-VF demo configuration and a sweep of load
        // costs, measured downtime against the limit and the prediction's error per row.
        // `swift run -c release DowntimePromise` here.
        .executableTarget(
            name: "DowntimePromise",
            dependencies: [
                .product(name: "ExampleVM", package: root),
                .product(name: "MigrationCore", package: root)
            ],
            path: "Tools/DowntimePromise"
        )
    ],
    swiftLanguageModes: [.v6]
)
