import Foundation

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
        let process = Process()
        process.executableURL = url(name)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes before waiting, so a chatty child cannot fill a pipe and block.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}
