import Foundation
import PackagePlugin

/// `swift package --allow-writing-to-package-directory scaffold-handler --name Acme --vendor-id 0x1234
/// [--device-id 0x5678 ...] [--driver acme_vfio_pci] [--edit-manifest]`
///
/// Adds a vendor module to the package it runs in: Switchover itself, or a package that depends
/// on Switchover (then the module's dependencies name Switchover's products). The work is done
/// by the `scaffold-handler` tool (the HandlerScaffold library); this plugin tells it where the
/// package is, which targets it already has and how Switchover is named from it.
@main
struct ScaffoldHandler: CommandPlugin {
    /// Options only the plugin may give the tool.
    static let internalOptions = ["--package-dir", "--switchover-package", "--existing-target"]

    func performCommand(context: PluginContext, arguments: [String]) async throws {
        if let option = arguments.first(where: { a in Self.internalOptions.contains { a == $0 || a.hasPrefix($0 + "=") } }) {
            throw ScaffoldPluginError("\(option) is set by the plugin itself")
        }
        let package = context.package
        var toolArguments = ["--package-dir", package.directoryURL.path] + arguments
        for target in package.targets { toolArguments += ["--existing-target", target.name] }
        if !package.targets.contains(where: { $0.name == "VFIOPCIHandler" }) {
            guard let switchover = Self.switchover(among: package.dependencies.map(\.package)) else {
                throw ScaffoldPluginError("this package neither is nor depends on Switchover (no VFIOPCIHandler product found)")
            }
            toolArguments += ["--switchover-package", switchover.id]
        }

        let tool = try context.tool(named: "scaffold-handler")
        let process = Process()
        process.executableURL = tool.url
        process.arguments = toolArguments
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            // The tool says "error: REASON"; SwiftPM adds its own "error: ".
            let reason = message.trimmingCharacters(in: .whitespacesAndNewlines)
            throw ScaffoldPluginError(reason.hasPrefix("error: ") ? String(reason.dropFirst(7)) : reason)
        }
    }

    /// The package (searched breadth-first through the dependency graph) that offers the
    /// vendor-module products.
    static func switchover(among packages: [Package]) -> Package? {
        var queue = packages
        var seen: Set<String> = []
        while !queue.isEmpty {
            let package = queue.removeFirst()
            guard seen.insert(package.id).inserted else { continue }
            let products = Set(package.products.map(\.name))
            if products.contains("VFIOPCIHandler") && products.contains("MigrationTestKit") { return package }
            queue += package.dependencies.map(\.package)
        }
        return nil
    }
}

struct ScaffoldPluginError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
