// Generates a vendor module (run by the ScaffoldHandler command plugin).
// Usage: scaffold-handler --package-dir DIR --name Acme --vendor-id 0x1234 [--device-id 0x5678 ...]
//        [--driver acme_vfio_pci] [--edit-manifest] [--switchover-package ID] [--existing-target T ...]
// Exit status: 0 done, 1 refused (the reason on stderr, nothing written), 2 usage.
import Foundation
import HandlerScaffold

func fail(_ status: Int32, _ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(status)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var packageDirectory = FileManager.default.currentDirectoryPath
if let i = arguments.firstIndex(of: "--package-dir") {
    guard i + 1 < arguments.count else { fail(2, "--package-dir needs a value") }
    packageDirectory = arguments[i + 1]
    arguments.removeSubrange(i...(i + 1))
}

let request: ScaffoldRequest
do {
    guard let parsed = try ScaffoldRequest.parse(arguments) else {
        print(ScaffoldRequest.usage)
        exit(0)
    }
    request = parsed
} catch {
    fail(2, error.message)
}

do {
    let report = try Scaffold(request: request, packageDirectory: URL(fileURLWithPath: packageDirectory)).run()
    for path in report.created { print("Created \(path)") }
    if report.manifestEdited {
        print("Package.swift: added \(request.targetName) and \(request.testTargetName) above the scaffold-handler markers")
    }
    for line in report.lines { print(line) }
} catch {
    fail(1, error.message)
}
