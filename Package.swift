// swift-tools-version:6.1
// swift-format-ignore-file
// (not formatted: `swift package scaffold-handler` inserts targets above its marker lines and
// relies on the trailing comma before each marker, which the formatter would remove)
// Switchover: live migration of passthrough (VFIO) devices, wire-compatible with QEMU.
import PackageDescription

// Linux only: the engine and the VFIO layer call Glibc, the Linux VFIO and iommufd uAPI and
// libpci. Any other host stops here, at manifest compile time, with this message instead of
// failing later in a module that imports Glibc.
#if !os(Linux)
#error("Switchover builds and runs on Linux only (Glibc, the Linux VFIO uAPI, libpci): see README.md, Requirements")
#endif

let package = Package(
    name: "Switchover",
    products: [
        // Wire format only: QEMU savevm v3 sections, commands, return path, multifd headers.
        .library(name: "MigrationStream", targets: ["MigrationStream"]),
        // The handler protocol, registry, source/destination engines, transports.
        .library(name: "MigrationCore", targets: ["MigrationCore"]),
        // TLS 1.3 with x509 mutual authentication on any transport (Debian's OpenSSL).
        .library(name: "MigrationTLS", targets: ["MigrationTLS"]),
        // The Linux VFIO migration uAPI v2, the syscall seam and kernel-backed devices.
        .library(name: "VFIO", targets: ["VFIO"]),
        // Simulated VFIO devices and hosts for tests, demos and benchmarks (never in the live syscall path).
        .library(name: "VFIOSimulator", targets: ["VFIOSimulator"]),
        // Declarative PCI match rules shared by vendor modules and discovery.
        .library(name: "DeviceMatch", targets: ["DeviceMatch"]),
        // Vendor modules.
        .library(name: "VFIOPCIHandler", targets: ["VFIOPCIHandler"]),
        .library(name: "MLX5Handler", targets: ["MLX5Handler"]),
        // scaffold-handler: new vendor products go above this line
        // The conformance suite every vendor module runs in its own tests.
        .library(name: "MigrationTestKit", targets: ["MigrationTestKit"]),
        // A small example VM (guest RAM with a dirtying workload) for demos, tests and benchmarks.
        .library(name: "ExampleVM", targets: ["ExampleVM"]),
        // Device discovery through libpci and the migratability verdict.
        .library(name: "PCIDiscovery", targets: ["PCIDiscovery"]),
        .executable(name: "devprobe", targets: ["devprobe"]),
        .executable(name: "switchover", targets: ["switchover"]),
        // Compiles a vendor module's devices.matchtable into Swift at build time.
        .plugin(name: "MatchTablePlugin", targets: ["MatchTablePlugin"]),
        // `swift package scaffold-handler`: adds a vendor module (sources, match table, conformance tests).
        .plugin(name: "ScaffoldHandler", targets: ["ScaffoldHandler"])
    ],
    dependencies: [
        // Command-line parsing for devprobe and switchover.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Errno and FileDescriptor types for the VFIO syscall seam.
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Structured logging from the migration engine.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // `swift package generate-documentation` for the DocC catalogs (make docs).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0")
    ],
    targets: [
        .target(name: "MigrationStream"),
        // Direct calls to what Swift cannot import from libc: GNU pipe2/accept4 and the variadic ioctl.
        .target(name: "CSwitchoverLibc"),
        .target(
            name: "MigrationCore",
            dependencies: [
                "MigrationStream", "CSwitchoverLibc",
                .product(name: "Logging", package: "swift-log"),
                // Errno: one errno type for transports, byte I/O and VFIO.
                .product(name: "SystemPackage", package: "swift-system")
            ]
        ),
        // A small C shim over Debian's OpenSSL (libssl-dev): no OpenSSL type reaches Swift.
        .target(
            name: "CSwitchoverTLS",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(
            name: "MigrationTLS",
            dependencies: ["CSwitchoverTLS", "MigrationCore", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "VFIO",
            dependencies: ["CSwitchoverLibc", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // The simulator, injected through VFIO's syscall seam (SimulatedVFIOSyscalls).
        .target(
            name: "VFIOSimulator",
            dependencies: ["VFIO", "CSwitchoverLibc", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(name: "DeviceMatch"),
        // What the command-line tools share: JSON output (with MigrationStream's string escaper) and locale-free number formatting.
        .target(name: "CLISupport", dependencies: ["MigrationStream"]),
        .target(
            name: "ExampleVM",
            dependencies: ["CLISupport", "DeviceMatch", "MigrationCore", "MigrationStream", "VFIO", "VFIOSimulator", "VFIOPCIHandler", "MLX5Handler"]),
        .executableTarget(name: "match-table-compiler", dependencies: ["DeviceMatch"]),
        .plugin(name: "MatchTablePlugin", capability: .buildTool(), dependencies: ["match-table-compiler"]),
        // The vendor-module generator, its tool and the command plugin that runs it.
        .target(name: "HandlerScaffold"),
        .executableTarget(name: "scaffold-handler", dependencies: ["HandlerScaffold"]),
        .plugin(
            name: "ScaffoldHandler",
            capability: .command(
                intent: .custom(verb: "scaffold-handler", description: "Adds a vendor module: handler, match table, conformance tests"),
                permissions: [
                    .writeToPackageDirectory(
                        reason:
                            "It creates Sources/<Name>Handler and Tests/<Name>HandlerTests (and edits Package.swift with --edit-manifest)")
                ]
            ),
            dependencies: ["scaffold-handler"]
        ),
        .target(
            name: "VFIOPCIHandler",
            dependencies: ["MigrationCore", "MigrationStream", "VFIO", "DeviceMatch"],
            plugins: ["MatchTablePlugin"]
        ),
        .target(
            name: "MLX5Handler",
            dependencies: ["VFIOPCIHandler", "MigrationCore", "MigrationStream", "VFIO", "DeviceMatch"],
            plugins: ["MatchTablePlugin"]
        ),
        .target(
            name: "MigrationTestKit",
            dependencies: ["MigrationCore", "MigrationStream", "VFIO", "VFIOSimulator", "VFIOPCIHandler"]
        ),
        .systemLibrary(
            name: "CLibPCI",
            pkgConfig: "libpci",
            providers: [.apt(["libpci-dev"])]
        ),
        .target(name: "CPCIShim", dependencies: ["CLibPCI"]),
        .target(
            name: "PCIDiscovery",
            dependencies: ["CLibPCI", "CPCIShim", "DeviceMatch", "VFIO", .product(name: "SystemPackage", package: "swift-system")]),
        .executableTarget(
            name: "devprobe",
            dependencies: [
                "PCIDiscovery", "DeviceMatch", "VFIOPCIHandler", "MLX5Handler", "CLISupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ]
        ),
        .executableTarget(
            name: "switchover",
            dependencies: [
                "MigrationStream", "MigrationCore", "MigrationTLS", "VFIO", "VFIOPCIHandler", "MLX5Handler", "ExampleVM", "CLISupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system")
            ]
        ),
        // Runs inside a QEMU guest against the real kernel's mtty sample device (make test-kernel).
        .executableTarget(
            name: "kernel-vfio-check",
            dependencies: ["VFIO", "VFIOPCIHandler", "MigrationCore", "MigrationStream", "KernelTestSupport"]
        ),
        // What kernel-vfio-check and qemu-peer-check share (a guest stand-in, a patient transport, the
        // async bridge, a device's state read out); not a product.
        .target(name: "KernelTestSupport", dependencies: ["VFIO", "MigrationCore"]),
        // Runs inside the kernel-test guest beside a real QEMU 10 (make test-qemu, docs/qemu-peer-test.md).
        .executableTarget(
            name: "qemu-peer-check",
            dependencies: ["VFIO", "VFIOPCIHandler", "MigrationCore", "MigrationStream", "MigrationTLS", "KernelTestSupport"]
        ),
        // What several test targets share: a child-process runner that needs no run loop.
        .target(name: "TestSupport", dependencies: ["MigrationCore"], path: "Tests/TestSupport"),
        .testTarget(name: "MigrationStreamTests", dependencies: ["MigrationStream"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MigrationCoreTests", dependencies: ["MigrationCore", "MigrationStream", "TestSupport"]),
        .testTarget(
            name: "MigrationTLSTests",
            dependencies: [
                "MigrationTLS", "MigrationCore", "MigrationStream", "ExampleVM", "TestSupport",
                .product(name: "SystemPackage", package: "swift-system")
            ]
        ),
        .testTarget(name: "VFIOTests", dependencies: ["VFIO", "VFIOSimulator"]),
        .testTarget(name: "DeviceMatchTests", dependencies: ["DeviceMatch"]),
        .testTarget(name: "ExampleVMTests", dependencies: ["ExampleVM", "MigrationCore", "MigrationStream", "VFIOPCIHandler", "MLX5Handler"]),
        .testTarget(
            name: "PCIDiscoveryTests",
            dependencies: ["PCIDiscovery", "DeviceMatch", "VFIO", "VFIOSimulator", "VFIOPCIHandler", "MLX5Handler", "TestSupport"]
        ),
        .testTarget(
            name: "VendorHandlerTests",
            dependencies: [
                "VFIOPCIHandler", "MLX5Handler", "MigrationCore", "MigrationStream", "VFIO", "VFIOSimulator", "MigrationTestKit",
                "ExampleVM", "DeviceMatch", "TestSupport"
            ]
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["switchover", "match-table-compiler", "scaffold-handler", "HandlerScaffold", "TestSupport", "MigrationStream"]),
        // The make test-kernel harness itself: kernel-vfio-check's child processes, and the host's scripts
        // (verdict, boot, skip) on fake consoles, a fake QEMU and a failing apt.
        // Fixtures/ is read from the source tree, as are the scripts and docs these tests check.
        .testTarget(
            name: "KernelHarnessTests", dependencies: ["kernel-vfio-check", "VFIO", "VFIOSimulator", "TestSupport"], exclude: ["Fixtures"]),
        // scaffold-handler: new vendor modules go above this line
    ],
    swiftLanguageModes: [.v6]
)
