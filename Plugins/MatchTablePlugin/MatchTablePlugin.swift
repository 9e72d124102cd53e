import Foundation
import PackagePlugin

/// Compiles every `*.matchtable` file of a target into a Swift enum `<Name>MatchTable` with
/// `static let rules: [PCIMatchRule]`. A malformed entry fails the build with the file, the
/// line and the reason.
@main
struct MatchTablePlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let compiler = try context.tool(named: "match-table-compiler")
        return target.sourceFiles(withSuffix: "matchtable").map { file in
            let name = file.url.deletingPathExtension().lastPathComponent
            let output = context.pluginWorkDirectoryURL.appending(path: "\(name)+MatchTable.swift")
            return .buildCommand(
                displayName: "Compiling match table \(file.url.lastPathComponent)",
                executable: compiler.url,
                arguments: [file.url.path, output.path],
                inputFiles: [file.url],
                outputFiles: [output]
            )
        }
    }
}
