// swift-tools-version:6.1
// Switchover's libFuzzer targets: a package of its own, built only by scripts/fuzz.sh
// (make fuzz), with AddressSanitizer and libFuzzer's coverage instrumentation, so the main build and `make test` stay as they are.
// Each target is an executable whose main.swift defines LLVMFuzzerTestOneInput; libFuzzer is
// linked into the targets only (not into the build plugin's tool, which has a main of its own);
// `fuzz-seeds` writes the seed corpora (scripts/fuzz.sh runs both).
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which differs between checkouts
// (a worktree, the main clone, CI's clone), so it is computed rather than spelled.
let root = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent.lowercased()

func fuzzTarget(_ name: String, _ products: [String]) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["FuzzSupport", "LibFuzzerDriver"] + products.map { .product(name: $0, package: root) },
        path: "Targets/\(name)",
        // libFuzzer's main and runtime; the code under test is instrumented by the flags
        // scripts/fuzz.sh passes to every compile (-sanitize=address -sanitize-coverage=…).
        linkerSettings: [.unsafeFlags(["-sanitize=fuzzer,address"])]
    )
}

let package = Package(
    name: "SwitchoverFuzz",
    dependencies: [.package(path: "..")],
    targets: [
        // What the targets and the seed tool share: input splitting, an in-memory connection, the machine.
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "MigrationCore", package: root), .product(name: "MigrationStream", package: root),
                .product(name: "ExampleVM", package: root)
            ]
        ),
        // libFuzzer's driver entry point (linked into the fuzz targets only).
        .target(name: "LibFuzzerDriver"),
        // `switchover inspect`: StreamInspection over a file holding the input (trailer lookup, walker, JSON).
        fuzzTarget("fuzz-stream-walker", ["MigrationStream"]),
        // The destination engine fed from bytes (main stream and, in multifd mode, two channels)
        // with the shipped handlers of an ExampleMachine: ram, generic VFIO, mlx5, mtty.
        fuzzTarget("fuzz-destination", ["MigrationCore", "MigrationStream", "ExampleVM"]),
        // The source's return-path reader thread (SourceReturnPath) fed the destination's messages.
        fuzzTarget("fuzz-return-path", ["MigrationCore", "MigrationStream"]),
        // Multifd: MultiFDInit / device-state packet decoders and the destination's channel classifier.
        fuzzTarget("fuzz-multifd", ["MigrationCore", "MigrationStream"]),
        // MLX5RecordParser, fed in pieces.
        fuzzTarget("fuzz-mlx5-records", ["MLX5Handler"]),
        // PCIMatchTableFile.parse and the Swift source generated from what it accepts.
        fuzzTarget("fuzz-match-table", ["DeviceMatch"]),
        // PCIDiscovery's sysfs attribute readers over a device directory written from the input.
        fuzzTarget("fuzz-sysfs", ["PCIDiscovery"]),
        // A foreign stream cut down to chosen sections: SectionSelection and SelectedFileTransport
        // over a file, SectionFilteringConnection (its walker thread) over a live stream.
        fuzzTarget("fuzz-section-filter", ["MigrationCore", "MigrationStream"]),
        // The kernel's dirty-tracking and pre-copy answers (type1 GET_INFO chain, GET_BITMAP, DMA
        // logging REPORT, iommufd GET_DIRTY_BITMAP, PRECOPY_INFO) from a VFIOSyscalls seam fed the input.
        fuzzTarget("fuzz-vfio-replies", ["VFIO", "VFIOPCIHandler", "MigrationCore"]),
        // Writes the seed corpora: the committed fixtures plus captures of real migrations.
        .executableTarget(
            name: "fuzz-seeds",
            dependencies: [
                "FuzzSupport",
                .product(name: "MigrationCore", package: root), .product(name: "MigrationStream", package: root),
                .product(name: "ExampleVM", package: root), .product(name: "MLX5Handler", package: root)
            ],
            path: "Tools/fuzz-seeds"
        )
    ],
    swiftLanguageModes: [.v6]
)
