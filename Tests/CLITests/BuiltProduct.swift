import Foundation
import TestSupport

/// Runs an executable the package built (it sits beside the test bundle in the build folder).
enum BuiltProduct {
    typealias Result = ChildProcess.Result

    static func url(_ name: String) -> URL {
        // On Linux the test bundle is an executable in the build products folder.
        let products = Bundle.main.bundleURL.deletingLastPathComponent()
        let candidate = products.appending(path: name)
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        return Bundle.main.bundleURL.appending(path: name)
    }

    static func run(_ name: String, _ arguments: [String]) throws -> Result {
        try ChildProcess.run(url(name).path, arguments)
    }

    /// As ``run(_:_:)``, without holding a cooperative thread while the child runs.
    static func run(_ name: String, _ arguments: [String]) async throws -> Result {
        try await ChildProcess(url(name).path, arguments).finished()
    }
}
