import Foundation

/// Generates a vendor module into a package directory: checks everything first, then creates
/// the files (never replacing one), then edits Package.swift when asked.
public struct Scaffold: Sendable {
    public let request: ScaffoldRequest
    /// The package's root (the folder of its Package.swift).
    public let packageDirectory: URL

    public init(request: ScaffoldRequest, packageDirectory: URL) { (self.request, self.packageDirectory) = (request, packageDirectory) }

    /// What ``run()`` did, as lines for the user.
    public struct Report: Sendable, Equatable {
        /// The files created, relative to the package directory.
        public var created: [String]
        /// Whether Package.swift now has the targets (and the product).
        public var manifestEdited: Bool
        /// What the user must still do, line by line (the manifest lines not inserted, the next commands).
        public var lines: [String]
    }

    var manifestURL: URL { packageDirectory.appending(path: "Package.swift") }

    /// Refuses a name the package uses and any path that exists. Nothing is written.
    public func check() throws(ScaffoldError) {
        let r = request
        for target in [r.targetName, r.testTargetName] where r.existingTargets.contains(target) {
            throw ScaffoldError("the package already has a target named \(target); choose another --name")
        }
        let manifest = try readManifest()
        for target in [r.targetName, r.testTargetName] where manifest.contains("\"\(target)\"") {
            throw ScaffoldError("Package.swift already names \"\(target)\"; choose another --name")
        }
        let folders = ["Sources/\(r.targetName)", "Tests/\(r.testTargetName)"]
        for path in folders + r.files.map(\.path) where exists(path) {
            throw ScaffoldError("\(path) already exists; scaffold-handler overwrites nothing")
        }
    }

    /// Checks, creates the module's files, and inserts its Package.swift lines when asked and
    /// the manifest has the markers. On a failure while writing, removes what it created.
    public func run() throws(ScaffoldError) -> Report {
        try check()
        let r = request
        var manifest = try readManifest()
        var pending: [(what: String, lines: [String])] = []
        var inserted = 0
        if r.editManifest {
            for (lines, marker, what) in [
                (r.productLines, ScaffoldRequest.productsMarker, "products"),
                (r.targetLines, ScaffoldRequest.targetsMarker, "targets")
            ] {
                if let edited = try ManifestEditor.insert(lines, above: marker, in: manifest) {
                    manifest = edited
                    inserted += 1
                } else {
                    pending.append(("\(what) (Package.swift has no \"\(marker)\" line)", lines))
                }
            }
        } else {
            pending = [("products", r.productLines), ("targets", r.targetLines)]
        }

        var created: [String] = []
        do {
            for (parent, folder) in [("Sources", r.targetName), ("Tests", r.testTargetName)] {
                if !exists(parent) {
                    try FileManager.default.createDirectory(at: url(parent), withIntermediateDirectories: false)
                    created.append(parent)
                }
                try FileManager.default.createDirectory(at: url("\(parent)/\(folder)"), withIntermediateDirectories: false)
                created.append("\(parent)/\(folder)")
            }
            for file in r.files {
                // withoutOverwriting: O_EXCL, so a file that appeared since check() is not replaced.
                try Data(file.contents.utf8).write(to: url(file.path), options: .withoutOverwriting)
                created.append(file.path)
            }
            if inserted > 0 {
                try Data(manifest.utf8).write(to: manifestURL, options: .atomic)
            }
        } catch {
            for path in created.reversed() { try? FileManager.default.removeItem(at: url(path)) }
            throw ScaffoldError("cannot write the module (nothing was kept): \(error.localizedDescription)")
        }

        var lines: [String] = []
        for (what, block) in pending {
            lines.append("Add to Package.swift, in \(what):")
            lines += block.map { "    " + $0 }
        }
        lines.append("Then: swift build && swift test --filter \(r.testTargetName)")
        return Report(created: created.filter { r.files.map(\.path).contains($0) }, manifestEdited: inserted == 2, lines: lines)
    }

    private func url(_ relative: String) -> URL { packageDirectory.appending(path: relative) }

    private func exists(_ relative: String) -> Bool {
        // fileExists follows symlinks; a dangling symlink is still something we would overwrite.
        (try? FileManager.default.attributesOfItem(atPath: url(relative).path)) != nil
    }

    private func readManifest() throws(ScaffoldError) -> String {
        do {
            return try String(contentsOf: manifestURL, encoding: .utf8)
        } catch {
            throw ScaffoldError("cannot read \(manifestURL.path): \(error.localizedDescription)")
        }
    }
}
