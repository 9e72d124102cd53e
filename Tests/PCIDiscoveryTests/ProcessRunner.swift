import Foundation
import TestSupport

/// Runs a program and collects its output and exit status.
typealias ProcessResult = ChildProcess.Result

func run(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
    try ChildProcess.run(executable, arguments)
}

/// The first of `candidates` that is an executable file.
func executable(_ candidates: [String]) -> String? {
    candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// The devprobe binary of this build: beside the test bundle, or in the package's .build.
func devprobePath() -> String? {
    var candidates: [String] = []
    if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The bundle is a directory on some platforms: walk up until devprobe is a sibling.
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent("devprobe").path)
            dir = dir.deletingLastPathComponent()
        }
    }
    let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(package.appendingPathComponent(".build/debug/devprobe").path)
    return executable(candidates)
}
