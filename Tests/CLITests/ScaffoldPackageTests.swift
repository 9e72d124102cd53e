import Foundation
import HandlerScaffold
import TestSupport
import Testing

let scaffoldPackageTestsEnabled = ProcessInfo.processInfo.environment["SWITCHOVER_SCAFFOLD_TEST"] == "1"

/// The real `swift package scaffold-handler`, then `swift build` and `swift test` on what it made:
/// in a vendor's package that depends on Switchover by path, and inside a copy of Switchover.
///
/// Run by `make test-scaffold` (SWITCHOVER_SCAFFOLD_TEST=1), not by `make test`: it runs SwiftPM
/// builds of its own, which take minutes the first time. The packages and their build folders
/// stay in `.build-scaffold/` between runs, so later runs rebuild only what changed.
@Suite(.serialized, .enabled(if: scaffoldPackageTestsEnabled, "set SWITCHOVER_SCAFFOLD_TEST=1 (make test-scaffold)"))
struct ScaffoldPackageTests {
    static let root = ScaffoldToolTests.repositoryRoot
    static let work = root.appending(path: ".build-scaffold")

    static let vendorManifest = """
        // swift-tools-version:6.1
        // A vendor's package: it depends on Switchover and gets its module from scaffold-handler.
        import PackageDescription

        let package = Package(
            name: "AcmeVendor",
            platforms: [.macOS(.v15)],
            products: [
                \(ScaffoldRequest.productsMarker)
            ],
            dependencies: [
                .package(path: "../.."),
            ],
            targets: [
                \(ScaffoldRequest.targetsMarker)
            ],
            swiftLanguageModes: [.v6]
        )

        """

    @Test func aVendorPackageGetsAModuleThatBuildsAndPassesTheConformanceKit() throws {
        let package = Self.work.appending(path: "vendor")
        let swift = SwiftPM(package: package, scratch: Self.work.appending(path: "vendor-build"))
        for old in ["Sources", "Tests", "Package.swift"] { try? FileManager.default.removeItem(at: package.appending(path: old)) }
        try FileManager.default.createDirectory(at: package, withIntermediateDirectories: true)
        try Data(Self.vendorManifest.utf8).write(to: package.appending(path: "Package.swift"))

        let scaffold = [
            "--allow-writing-to-package-directory", "scaffold-handler", "--name", "Acme", "--vendor-id", "0x1234",
            "--device-id", "0x5678", "--device-id", "0x5679", "--driver", "acme_vfio_pci", "--edit-manifest"
        ]
        let made = try swift.run("package", scaffold)
        try #require(made.status == 0, "\(made.output)")
        #expect(made.output.contains("Created Sources/AcmeHandler/AcmeModule.swift\n"))
        let manifest = try String(contentsOf: package.appending(path: "Package.swift"), encoding: .utf8)
        // The plugin names Switchover by its package identity (here, its folder's name).
        let identity = Self.root.lastPathComponent.lowercased()
        #expect(manifest.contains("plugins: [.plugin(name: \"MatchTablePlugin\", package: \"\(identity)\")]"))
        #expect(manifest.contains(".product(name: \"MigrationTestKit\", package: \"\(identity)\"),"))

        // Refusals through the plugin: the name it now has, a bad id. Nothing changes.
        let files = try contents(of: package)
        let again = try swift.run("package", scaffold)
        #expect(again.status != 0)
        #expect(
            again.output.contains("error: the package already has a target named AcmeHandler; choose another --name"), "\(again.output)")
        let badID = try swift.run(
            "package", ["--allow-writing-to-package-directory", "scaffold-handler", "--name", "Beta", "--vendor-id", "0x12345"])
        #expect(badID.status != 0)
        #expect(badID.output.contains("error: --vendor-id \"0x12345\" is not a 16-bit hex id (e.g. 0x1234)"), "\(badID.output)")
        #expect(try contents(of: package) == files)

        let build = try swift.run("build", ["--build-tests"])
        try #require(build.status == 0, "\(build.output)")
        #expect(!build.output.contains("warning:"), "\(build.output)")
        let test = try swift.run("test", ["--skip-build"])
        #expect(test.status == 0, "\(test.output)")
        #expect(test.output.contains("✔ Suite AcmeConformanceTests passed"), "\(test.output)")
        #expect(test.output.contains("✔ Test run with 8 tests"), "\(test.output)")

        // A malformed rule fails the build at its line, through MatchTablePlugin.
        let table = package.appending(path: "Sources/AcmeHandler/devices.matchtable")
        let good = try String(contentsOf: table, encoding: .utf8)
        defer { try? Data(good.utf8).write(to: table) }
        let badLine = good.split(separator: "\n", omittingEmptySubsequences: false).count
        try Data((good + "vendor=1234 device=56789 driver=acme_vfio_pci\n").utf8).write(to: table)
        let broken = try swift.run("build", ["--target", "AcmeHandler"])
        #expect(broken.status != 0)
        #expect(broken.output.contains("\(table.path):\(badLine): error: device \"56789\" is not 4 hex digits"), "\(broken.output)")
    }

    @Test func insideSwitchoverTheEditedManifestBuildsTheNewTargets() throws {
        let copy = Self.work.appending(path: "switchover")
        let swift = SwiftPM(package: copy, scratch: Self.work.appending(path: "switchover-build"))
        for generated in ["Sources/AcmeHandler", "Tests/AcmeHandlerTests"] {
            try? FileManager.default.removeItem(at: copy.appending(path: generated))
        }
        try mirror(["Package.swift", "Sources", "Tests", "Plugins"], from: Self.root, to: copy)

        let made = try swift.run(
            "package",
            [
                "--allow-writing-to-package-directory", "scaffold-handler",
                "--name", "Acme", "--vendor-id", "0x1234", "--driver", "acme_vfio_pci", "--edit-manifest"
            ])
        try #require(made.status == 0, "\(made.output)")
        let manifest = try String(contentsOf: copy.appending(path: "Package.swift"), encoding: .utf8)
        #expect(
            manifest.contains(
                """
                        .library(name: "AcmeHandler", targets: ["AcmeHandler"]),
                        \(ScaffoldRequest.productsMarker)
                """))
        #expect(
            manifest.contains(
                """
                        .target(
                            name: "AcmeHandler",
                            dependencies: ["VFIOPCIHandler", "MigrationCore", "VFIO", "DeviceMatch"],
                            plugins: ["MatchTablePlugin"]
                        ),
                """))
        let mlx5 = try swift.run(
            "package", ["--allow-writing-to-package-directory", "scaffold-handler", "--name", "MLX5", "--vendor-id", "15b3"])
        #expect(mlx5.output.contains("error: the package already has a target named MLX5Handler; choose another --name"), "\(mlx5.output)")

        let build = try swift.run("build", ["--target", "AcmeHandlerTests"])
        #expect(build.status == 0, "\(build.output)")
        #expect(!build.output.contains("warning:"), "\(build.output)")
    }

    // MARK: Helpers

    /// Every regular file under `dir` (build folders aside), relative, with its bytes.
    func contents(of dir: URL) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for path in try FileManager.default.subpathsOfDirectory(atPath: dir.path) where !path.hasPrefix(".build") {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: dir.appending(path: path).path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files[path] = try Data(contentsOf: dir.appending(path: path))
            }
        }
        return files
    }

    /// Makes `destination` hold exactly the given items of `source`, rewriting only the files
    /// that differ so their modification times, hence the incremental build, are kept.
    func mirror(_ items: [String], from source: URL, to destination: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: destination, withIntermediateDirectories: true)
        var wanted: Set<String> = []
        for item in items {
            let paths = (try? fm.subpathsOfDirectory(atPath: source.appending(path: item).path)).map { $0.map { "\(item)/\($0)" } } ?? []
            for path in [item] + paths {
                var isDirectory: ObjCBool = false
                guard fm.fileExists(atPath: source.appending(path: path).path, isDirectory: &isDirectory) else { continue }
                wanted.insert(path)
                let target = destination.appending(path: path)
                if isDirectory.boolValue {
                    try fm.createDirectory(at: target, withIntermediateDirectories: true)
                } else {
                    let bytes = try Data(contentsOf: source.appending(path: path))
                    if (try? Data(contentsOf: target)) != bytes { try bytes.write(to: target) }
                }
            }
        }
        for item in items {
            for path in (try? fm.subpathsOfDirectory(atPath: destination.appending(path: item).path)) ?? []
            where !wanted.contains("\(item)/\(path)") {
                try? fm.removeItem(at: destination.appending(path: "\(item)/\(path)"))
            }
        }
    }
}

/// Runs `swift` subcommands on one package with its own build folder, printing how long each took.
struct SwiftPM {
    var package: URL
    var scratch: URL

    struct Result {
        var status: Int32
        /// stdout and stderr, interleaved as they came.
        var output: String
    }

    func run(_ subcommand: String, _ arguments: [String]) throws -> Result {
        let swift = ProcessInfo.processInfo.environment["SWIFT"] ?? "swift"
        let start = ContinuousClock.now
        let run = try ChildProcess.run(
            "/usr/bin/env", [swift, subcommand, "--package-path", package.path, "--scratch-path", scratch.path] + arguments,
            errorOutput: .merged, limit: .seconds(1800))
        let seconds = (ContinuousClock.now - start).components.seconds
        print(
            "scaffold test: swift \(subcommand) \(arguments.prefix(3).joined(separator: " ")) in \(package.lastPathComponent): "
                + "status \(run.status), \(seconds) s")
        return Result(status: run.status, output: run.stdout)
    }
}
