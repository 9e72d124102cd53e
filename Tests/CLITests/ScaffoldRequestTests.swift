import HandlerScaffold
import Testing

/// What `scaffold-handler` accepts on its command line, and what it refuses before touching anything.
@Suite struct ScaffoldRequestTests {
    func parse(_ line: String) throws(ScaffoldError) -> ScaffoldRequest? {
        try ScaffoldRequest.parse(line.split(separator: " ").map(String.init))
    }

    func refusal(_ line: String) -> String? {
        do {
            _ = try parse(line)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func aFullCommandLineIsParsedAndNormalised() throws {
        let request = try #require(
            try parse("--name Acme --vendor-id 0x1234 --device-id 5678 --device-id=0xAB,1 --driver acme_vfio_pci --edit-manifest"))
        #expect(
            request
                == ScaffoldRequest(
                    name: "Acme", vendorID: 0x1234, deviceIDs: [0x5678, 0xab, 0x1],
                    driver: "acme_vfio_pci", editManifest: true))
        #expect(request.targetName == "AcmeHandler")
        #expect(request.testTargetName == "AcmeHandlerTests")
        #expect(request.moduleName == "acme")
    }

    @Test func helpIsNotARequest() throws {
        #expect(try parse("--name Acme --help") == nil)
        #expect(ScaffoldRequest.usage.contains("--edit-manifest"))
    }

    @Test(arguments: [
        ("--vendor-id 0x1234", "--name is required (e.g. --name Acme)"),
        ("--name Acme", "--vendor-id is required (e.g. --vendor-id 0x1234)"),
        (
            "--name acme --vendor-id 1",
            "--name \"acme\" is not a Swift type name: start with an uppercase letter, then letters and digits only (e.g. Acme)"
        ),
        (
            "--name Acme-Net --vendor-id 1",
            "--name \"Acme-Net\" is not a Swift type name: start with an uppercase letter, then letters and digits only (e.g. Acme)"
        ),
        (
            "--name 9Acme --vendor-id 1",
            "--name \"9Acme\" is not a Swift type name: start with an uppercase letter, then letters and digits only (e.g. Acme)"
        ),
        (
            "--name AcmeHandler --vendor-id 1",
            "--name \"AcmeHandler\" ends with Handler; give the vendor's name only (Acme gives AcmeHandler)"
        ),
        ("--name Acme --vendor-id 0x12345", "--vendor-id \"0x12345\" is not a 16-bit hex id (e.g. 0x1234)"),
        ("--name Acme --vendor-id acme", "--vendor-id \"acme\" is not a 16-bit hex id (e.g. 0x1234)"),
        ("--name Acme --vendor-id 0x", "--vendor-id \"0x\" is not a 16-bit hex id (e.g. 0x1234)"),
        ("--name Acme --vendor-id +123", "--vendor-id \"+123\" is not a 16-bit hex id (e.g. 0x1234)"),
        ("--name Acme --vendor-id 0xffff", "--vendor-id 0xffff is not an id: it is what a PCI read returns when no device answers"),
        ("--name Acme --vendor-id 1 --device-id 0x1g00", "--device-id \"0x1g00\" is not a 16-bit hex id (e.g. 0x1234)"),
        ("--name Acme --vendor-id 1 --device-id 1 --device-id 0x0001", "--device-id 0x0001 is given twice"),
        (
            "--name Acme --vendor-id 1 --driver acme/vfio",
            "--driver \"acme/vfio\" is not a kernel driver name (letters, digits, _ and -, at most 64)"
        ),
        (
            "--name Acme --vendor-id 1 --driver acme.ko",
            "--driver \"acme.ko\" is not a kernel driver name (letters, digits, _ and -, at most 64)"
        ),
        ("--name Acme --name Beta --vendor-id 1", "--name is given twice"),
        ("--name Acme --vendor-id", "--vendor-id needs a value"),
        ("--name --vendor-id 1", "--name needs a value"),
        ("--name Acme --vendor-id 1 --edit-manifest=yes", "--edit-manifest takes no value"),
        ("--name Acme --vendor-id 1 --force", "unknown argument \"--force\" (see --help)")
    ])
    func badArgumentsAreRefusedWithTheReason(_ line: String, _ message: String) {
        #expect(refusal(line) == message)
    }

    @Test func aDriverNameOfSixtyFiveCharactersIsRefused() {
        #expect(refusal("--name Acme --vendor-id 1 --driver " + String(repeating: "a", count: 64)) == nil)
        #expect(refusal("--name Acme --vendor-id 1 --driver " + String(repeating: "a", count: 65))?.hasPrefix("--driver") == true)
    }

    @Test func theMatchTableHasOneRulePerDevice() {
        let request = ScaffoldRequest(name: "Acme", vendorID: 0x1234, deviceIDs: [0x5678, 0xab], driver: "acme_vfio_pci")
        let table = request.files.first { $0.path == "Sources/AcmeHandler/devices.matchtable" }?.contents ?? ""
        let rules = table.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(rules == ["vendor=1234 device=5678 driver=acme_vfio_pci", "vendor=1234 device=00ab driver=acme_vfio_pci"])
        let vendorWide = ScaffoldRequest(name: "Acme", vendorID: 0x1234).files[1].contents
        #expect(vendorWide.split(separator: "\n").filter { !$0.hasPrefix("#") } == ["vendor=1234"])
    }

    @Test func manifestLinesNameSwitchoverProductsFromAnotherPackage() {
        let inside = ScaffoldRequest(name: "Acme", vendorID: 0x1234)
        #expect(inside.targetLines.contains("    dependencies: [\"VFIOPCIHandler\", \"MigrationCore\", \"VFIO\", \"DeviceMatch\"],"))
        #expect(inside.targetLines.contains("    plugins: [\"MatchTablePlugin\"]"))
        let outside = ScaffoldRequest(name: "Acme", vendorID: 0x1234, switchoverPackage: "switchover")
        #expect(outside.targetLines.contains("        .product(name: \"MigrationTestKit\", package: \"switchover\"),"))
        #expect(outside.targetLines.contains("    plugins: [.plugin(name: \"MatchTablePlugin\", package: \"switchover\")]"))
        #expect(outside.productLines.last == ".library(name: \"AcmeHandler\", targets: [\"AcmeHandler\"]),")
    }

    @Test func linesGoAboveTheMarkerAtItsIndentation() throws {
        let manifest = "targets: [\n    .target(name: \"A\"),\n    \(ScaffoldRequest.targetsMarker)\n]\n"
        let edited = try ManifestEditor.insert(["// x", ".target(name: \"B\"),"], above: ScaffoldRequest.targetsMarker, in: manifest)
        #expect(
            edited
                == "targets: [\n    .target(name: \"A\"),\n    // x\n    .target(name: \"B\"),\n    \(ScaffoldRequest.targetsMarker)\n]\n")
        #expect(try ManifestEditor.insert(["x"], above: ScaffoldRequest.targetsMarker, in: "targets: []\n") == nil)
        // The marker must stand alone on its line: a mention inside other text is not one.
        #expect(
            try ManifestEditor.insert(["x"], above: ScaffoldRequest.targetsMarker, in: "let s = \"\(ScaffoldRequest.targetsMarker)\"\n")
                == nil)
    }

    @Test func aMarkerOnTwoLinesIsRefused() {
        let marker = ScaffoldRequest.targetsMarker
        #expect(throws: ScaffoldError("Package.swift has the marker \"\(marker)\" on 2 lines; keep one")) {
            try ManifestEditor.insert(["x"], above: marker, in: "\(marker)\n  \(marker)\n")
        }
    }
}
