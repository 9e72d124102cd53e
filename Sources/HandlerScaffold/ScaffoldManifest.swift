/// The Package.swift lines of a new vendor module, and their insertion above marker comments.
///
/// A manifest opts in to `--edit-manifest` by holding the markers as whole lines:
///
///     products: [
///         …
///         // scaffold-handler: new vendor products go above this line
///     ],
///     targets: [
///         …
///         // scaffold-handler: new vendor modules go above this line
///     ],
///
/// Without a marker the scaffold prints the lines for the user to place.
extension ScaffoldRequest {
    /// The marker inside `targets:`.
    public static let targetsMarker = "// scaffold-handler: new vendor modules go above this line"
    /// The marker inside `products:`.
    public static let productsMarker = "// scaffold-handler: new vendor products go above this line"

    /// A dependency on one of Switchover's products, as this package must spell it.
    func dependency(_ product: String) -> String {
        switchoverPackage.map { ".product(name: \"\(product)\", package: \"\($0)\")" } ?? "\"\(product)\""
    }

    /// The product line (a library, so a VMM can link the module), unindented.
    public var productLines: [String] {
        ["// The \(name) vendor module.", ".library(name: \"\(targetName)\", targets: [\"\(targetName)\"]),"]
    }

    /// The target and test target, unindented (4 spaces per level inside).
    public var targetLines: [String] {
        let moduleDependencies = ["VFIOPCIHandler", "MigrationCore", "VFIO", "DeviceMatch"].map(dependency)
        let testDependencies =
            ["\"\(targetName)\""] + ["MigrationTestKit", "VFIOPCIHandler", "VFIO", "VFIOSimulator", "DeviceMatch"].map(dependency)
        let plugin = switchoverPackage.map { ".plugin(name: \"MatchTablePlugin\", package: \"\($0)\")" } ?? "\"MatchTablePlugin\""
        func list(_ items: [String]) -> [String] {
            switchoverPackage == nil
                ? ["    dependencies: [\(items.joined(separator: ", "))],"]
                : ["    dependencies: ["] + items.map { "        \($0)," } + ["    ],"]
        }
        return [
            "// The \(name) vendor module (from scaffold-handler) and its conformance tests.",
            ".target(",
            "    name: \"\(targetName)\","
        ]
            + list(moduleDependencies)
            + [
                "    plugins: [\(plugin)]",
                "),",
                ".testTarget(",
                "    name: \"\(testTargetName)\","
            ]
            + list(testDependencies).map { $0.hasSuffix("],") ? String($0.dropLast()) : $0 }
            + ["),"]
    }
}

/// Inserts lines above a marker comment of a manifest.
public enum ManifestEditor {
    /// The manifest with `lines` inserted above the line that holds `marker` (and nothing else
    /// but indentation), indented as the marker is; nil when no line holds the marker.
    /// Throws when several do: the edit would be a guess.
    public static func insert(_ lines: [String], above marker: String, in manifest: String) throws(ScaffoldError) -> String? {
        var manifestLines = manifest.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let hits = manifestLines.indices.filter { manifestLines[$0].trimmingSpaces == marker }
        guard let index = hits.first else { return nil }
        guard hits.count == 1 else {
            throw ScaffoldError("Package.swift has the marker \"\(marker)\" on \(hits.count) lines; keep one")
        }
        let indent = String(manifestLines[index].prefix { $0 == " " || $0 == "\t" })
        manifestLines.insert(contentsOf: lines.map { indent + $0 }, at: index)
        return manifestLines.joined(separator: "\n")
    }
}

extension String {
    var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " && $0 != "\t" } ?? endIndex
        let end = lastIndex { $0 != " " && $0 != "\t" && $0 != "\r" }.map(index(after:)) ?? start
        return self[start..<max(start, end)]
    }
}
