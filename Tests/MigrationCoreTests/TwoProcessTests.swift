import Foundation
import MigrationCore
import MigrationStream
import TestSupport
import Testing

/// The destination runs in this process; the source in a second process: this test binary
/// itself, re-run with a filter that selects ``sourceRole()`` and an environment that
/// enables it.
@Suite struct TwoProcessTests {
    static let environment = ProcessInfo.processInfo.environment
    static var isSourceRole: Bool { environment["SWITCHOVER_TEST_ROLE"] == "source" }

    static func parameters() -> MigrationParameters {
        var p = MigrationParameters()
        p.switchoverAck = true
        p.stallTimeout = .seconds(120)
        return p
    }

    static func scenario() throws -> Scenario {
        try Scenario(ram: { RAMHandler(pages: 256) }, device: DeviceHandler.Config(ackDelay: .milliseconds(50)))
    }

    @Test(.enabled(if: !isSourceRole))
    func sourceAndDestinationInTwoProcessesOverTCP() async throws {
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let dir = FileManager.default.temporaryDirectory
        let resultFile = dir.appendingPathComponent("switchover-source-ram-\(getpid()).bin")
        defer { try? FileManager.default.removeItem(at: resultFile) }

        var env = Self.environment
        env["SWITCHOVER_TEST_ROLE"] = "source"
        env["SWITCHOVER_TEST_PORT"] = String(listener.port)
        env["SWITCHOVER_TEST_RESULT"] = resultFile.path
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let arguments = ["--testing-library", "swift-testing", "--filter", "TwoProcessTests/sourceRole"]

        let s = try Self.scenario()
        let destination = s.destination(Self.parameters())
        async let incoming = capture { try await destination.run(accepting: listener) }
        let child = try await ChildProcess(executable, arguments, environment: env, errorOutput: .merged).finished(limit: .seconds(300))
        let result = await incoming
        try #require(child.status == 0, "the source process failed:\n\(child.stdout.suffix(3000))")
        let stats = try result.get()
        #expect(stats.usedExtensions && stats.returnPathOpened)
        // Byte-identical: the source process wrote its final RAM.
        let sourceRAM = try [UInt8](Data(contentsOf: resultFile))
        #expect(sourceRAM.count == s.destinationRAM.snapshot.count)
        #expect(sourceRAM == s.destinationRAM.snapshot)
        #expect(s.destinationDevice?.received == s.sourceDevice?.expectedData)
        #expect(s.destinationFull.data == s.sourceFull.data)
        #expect(s.destinationVM.isRunning)
    }

    /// Runs only in the child process.
    @Test(.enabled(if: isSourceRole))
    func sourceRole() async throws {
        let port = try #require(Self.environment["SWITCHOVER_TEST_PORT"].flatMap(UInt16.init))
        let resultPath = try #require(Self.environment["SWITCHOVER_TEST_RESULT"])
        let s = try Self.scenario()
        s.sourceRAM.startWorkload(pagesPerTick: 4, tick: 0.001)
        let stats = try await s.source(Self.parameters()).run(to: TCPTransport(host: "127.0.0.1", port: port))
        s.sourceRAM.stopWorkload()
        #expect(stats.usedExtensions)
        #expect(try #require(s.log.index(of: "source stopVM")) >= 0)
        try Data(s.sourceRAM.snapshot).write(to: URL(fileURLWithPath: resultPath))
    }
}
