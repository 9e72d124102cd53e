import Foundation
import TestSupport

/// Runs an executable the package built (it sits beside the test bundle in the build folder).
enum BuiltProduct {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func url(_ name: String) -> URL {
        // On Linux the test bundle is an executable in the build products folder.
        let products = Bundle.main.bundleURL.deletingLastPathComponent()
        let candidate = products.appending(path: name)
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        return Bundle.main.bundleURL.appending(path: name)
    }

    static func run(_ name: String, _ arguments: [String]) throws -> Result {
        let run = try ChildProcess.run(url(name).path, arguments)
        return Result(status: run.status, stdout: run.stdout, stderr: run.stderr)
    }

    /// As ``run(_:_:)``, without holding a cooperative thread while the child runs.
    static func run(_ name: String, _ arguments: [String]) async throws -> Result {
        let run = try await ChildProcess(url(name).path, arguments).finished()
        return Result(status: run.status, stdout: run.stdout, stderr: run.stderr)
    }
}
