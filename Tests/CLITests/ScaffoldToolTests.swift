import Foundation
import HandlerScaffold
import Testing

/// The `scaffold-handler` tool (what the ScaffoldHandler plugin runs) against throw-away package
/// folders. `make test-scaffold` builds and tests what it generates (ScaffoldPackageTests).
@Suite struct ScaffoldToolTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let markedManifest = """
        // swift-tools-version:6.1
        import PackageDescription

        let package = Package(
            name: "AcmeVendor",
            products: [
                \(ScaffoldRequest.productsMarker)
            ],
            dependencies: [.package(path: "../switchover")],
            targets: [
                \(ScaffoldRequest.targetsMarker)
            ]
        )

        """

    /// A package folder holding `manifest` as its Package.swift.
    func withPackage(_ manifest: String = markedManifest, _ body: (URL) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appending(path: "scaffold-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(manifest.utf8).write(to: dir.appending(path: "Package.swift"))
        try body(dir)
    }

    func scaffold(_ dir: URL, _ arguments: String) throws -> BuiltProduct.Result {
        try BuiltProduct.run("scaffold-handler", ["--package-dir", dir.path] + arguments.split(separator: " ").map(String.init))
    }

    /// Every file under `dir`, relative, with its contents.
    func snapshot(_ dir: URL) throws -> [String: Data] {
        var files: [String: Data] = [:]
        let base = dir.resolvingSymlinksInPath().path
        for case let url as URL in FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey]) ?? .init()
        where (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true {
            files[String(url.resolvingSymlinksInPath().path.dropFirst(base.count + 1))] = try Data(contentsOf: url)
        }
        return files
    }

    @Test func itWritesTheModuleAndItsTestsAndEditsAMarkedManifest() throws {
        try withPackage { dir in
            let result = try scaffold(
                dir,
                "--name Acme --vendor-id 0x1234 --device-id 0x5678 --driver acme_vfio_pci --edit-manifest --switchover-package switchover")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(
                result.stdout == """
                    Created Sources/AcmeHandler/AcmeModule.swift
                    Created Sources/AcmeHandler/devices.matchtable
                    Created Tests/AcmeHandlerTests/AcmeConformanceTests.swift
                    Package.swift: added AcmeHandler and AcmeHandlerTests above the scaffold-handler markers
                    Then: swift build && swift test --filter AcmeHandlerTests

                    """)
            let files = try snapshot(dir)
            #expect(
                Set(files.keys) == [
                    "Package.swift", "Sources/AcmeHandler/AcmeModule.swift", "Sources/AcmeHandler/devices.matchtable",
                    "Tests/AcmeHandlerTests/AcmeConformanceTests.swift"
                ])
            let manifest = String(decoding: files["Package.swift"] ?? Data(), as: UTF8.self)
            #expect(
                manifest.contains(
                    """
                            .library(name: "AcmeHandler", targets: ["AcmeHandler"]),
                            \(ScaffoldRequest.productsMarker)
                    """))
            #expect(
                manifest.contains(
                    """
                            .testTarget(
                                name: "AcmeHandlerTests",
                    """))
            #expect(manifest.contains("        plugins: [.plugin(name: \"MatchTablePlugin\", package: \"switchover\")]\n"))
            let module = String(decoding: files["Sources/AcmeHandler/AcmeModule.swift"] ?? Data(), as: UTF8.self)
            #expect(module.contains("public enum AcmeModule {"))
            #expect(module.contains("public static let module = VFIOVendorModule(descriptor: descriptor)"))
            #expect(module.contains("public final class AcmeTuning: VFIOPCITuning {"))
            let tests = String(decoding: files["Tests/AcmeHandlerTests/AcmeConformanceTests.swift"] ?? Data(), as: UTF8.self)
            for check in [
                "checkMigration(.preCopyWithAck)", "checkMigration(.preCopyWithoutAck)", "checkMigration(.stopCopyOnly)",
                "@Test(Self.kit.enabled(for: .stopCopyOnly))", "checkConnectionLoss()", "checkCancel()", "checkMalformedBodies()",
                "checkRunStateOrder(devices: devices, multifd: multifd)"
            ] {
                #expect(tests.contains(check))
            }
            #expect(tests.contains("PCIIdentity(vendorID: 0x1234, deviceID: 0x5678, driver: \"acme_vfio_pci\")"))
        }
    }

    @Test func theGeneratedMatchTableCompiles() throws {
        try withPackage { dir in
            #expect(
                try scaffold(dir, "--name Acme --vendor-id 0x1234 --device-id 0x5678 --device-id 0x5679 --driver acme-vfio").status == 0)
            let table = dir.appending(path: "Sources/AcmeHandler/devices.matchtable").path
            let output = dir.appending(path: "out.swift").path
            let result = try BuiltProduct.run("match-table-compiler", [table, output])
            #expect(result.status == 0, "\(result.stderr)")
            let source = try String(contentsOfFile: output, encoding: .utf8)
            #expect(
                source.contains(
                    "PCIMatchRule(vendorID: 0x1234, deviceID: 0x5679, subsystemVendorID: nil, subsystemDeviceID: nil, classCode: nil, classMask: 0xffffff, driver: \"acme-vfio\")"
                ))
        }
    }

    @Test func runningItTwiceRefusesAndChangesNothing() throws {
        try withPackage { dir in
            #expect(try scaffold(dir, "--name Acme --vendor-id 0x1234 --edit-manifest").status == 0)
            let before = try snapshot(dir)
            let again = try scaffold(dir, "--name Acme --vendor-id 0x4321 --edit-manifest")
            #expect(again.status == 1)
            #expect(again.stderr == "error: Package.swift already names \"AcmeHandler\"; choose another --name\n")
            #expect(try snapshot(dir) == before)
        }
    }

    @Test func anExistingTargetNameIsRefused() throws {
        try withPackage { dir in
            let result = try scaffold(dir, "--name MLX5 --vendor-id 0x15b3 --existing-target MLX5Handler --existing-target VFIO")
            #expect(result.status == 1)
            #expect(result.stderr == "error: the package already has a target named MLX5Handler; choose another --name\n")
            #expect(try snapshot(dir).keys.sorted() == ["Package.swift"])
        }
    }

    @Test func anExistingFileIsNeverOverwrittenAndNothingIsWritten() throws {
        try withPackage { dir in
            let tests = dir.appending(path: "Tests/AcmeHandlerTests")
            try FileManager.default.createDirectory(at: tests, withIntermediateDirectories: true)
            try Data("mine".utf8).write(to: tests.appending(path: "AcmeConformanceTests.swift"))
            let before = try snapshot(dir)
            let result = try scaffold(dir, "--name Acme --vendor-id 0x1234 --edit-manifest")
            #expect(result.status == 1)
            #expect(result.stderr == "error: Tests/AcmeHandlerTests already exists; scaffold-handler overwrites nothing\n")
            #expect(try snapshot(dir) == before)
            #expect(!FileManager.default.fileExists(atPath: dir.appending(path: "Sources/AcmeHandler").path))
        }
    }

    @Test func badIdsFailWithUsageStatusAndWriteNothing() throws {
        try withPackage { dir in
            let result = try scaffold(dir, "--name Acme --vendor-id 0x1234 --device-id 0x10000")
            #expect(result.status == 2)
            #expect(result.stderr == "error: --device-id \"0x10000\" is not a 16-bit hex id (e.g. 0x1234)\n")
            #expect(try snapshot(dir).keys.sorted() == ["Package.swift"])
        }
    }

    @Test func withoutMarkersTheLinesArePrintedAndTheManifestIsLeftAlone() throws {
        let plain = "// swift-tools-version:6.1\nimport PackageDescription\nlet package = Package(name: \"P\", targets: [])\n"
        try withPackage(plain) { dir in
            let result = try scaffold(dir, "--name Acme --vendor-id 0x1234 --edit-manifest")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try String(contentsOf: dir.appending(path: "Package.swift"), encoding: .utf8) == plain)
            #expect(
                result.stdout.contains(
                    "Add to Package.swift, in products (Package.swift has no \"\(ScaffoldRequest.productsMarker)\" line):\n"))
            #expect(
                result.stdout.contains(
                    """
                    Add to Package.swift, in targets (Package.swift has no "\(ScaffoldRequest.targetsMarker)" line):
                        // The Acme vendor module (from scaffold-handler) and its conformance tests.
                        .target(
                            name: "AcmeHandler",
                            dependencies: ["VFIOPCIHandler", "MigrationCore", "VFIO", "DeviceMatch"],
                            plugins: ["MatchTablePlugin"]
                        ),
                    """))
        }
    }

    @Test func switchoversOwnManifestHasEachMarkerOnce() throws {
        let manifest = try String(contentsOf: Self.repositoryRoot.appending(path: "Package.swift"), encoding: .utf8)
        for marker in [ScaffoldRequest.productsMarker, ScaffoldRequest.targetsMarker] {
            #expect(manifest.split(separator: "\n").filter { $0.trimmingCharacters(in: .whitespaces) == marker }.count == 1)
        }
        // So an existing module's name is refused from the manifest alone.
        try withPackage(manifest) { dir in
            let result = try scaffold(dir, "--name MLX5 --vendor-id 0x15b3")
            #expect(result.stderr == "error: Package.swift already names \"MLX5Handler\"; choose another --name\n")
        }
    }
}
