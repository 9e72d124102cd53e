import Foundation
import MigrationCore
import MigrationStream
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct TransportTests {
    @Test func addressesParseAsQEMUWritesThem() throws {
        #expect(try MigrationAddress(parsing: "tcp:127.0.0.1:4444") == .tcp(host: "127.0.0.1", port: 4444))
        #expect(try MigrationAddress(parsing: "tcp:[::1]:4444") == .tcp(host: "::1", port: 4444))
        #expect(try MigrationAddress(parsing: "tcp:dest.example:0") == .tcp(host: "dest.example", port: 0))
        #expect(try MigrationAddress(parsing: "unix:/run/mig.sock") == .unix(path: "/run/mig.sock"))
        #expect(try MigrationAddress(parsing: "file:/tmp/vm.mig") == .file(path: "/tmp/vm.mig"))
        #expect(try MigrationAddress(parsing: "fd:7") == .fd(7))
        #expect(MigrationAddress.tcp(host: "::1", port: 4444).description == "tcp:[::1]:4444")
        for bad in ["tcp:::1:4444", "tcp:host:99999", "tcp:host", "exec:cat", "fd:-1", "fd:x", "unix:", "nocolon"] {
            #expect(throws: TransportError.self, "\(bad)") { try MigrationAddress(parsing: bad) }
        }
    }

    /// Runs a destination accepting on `listener` and a source connecting through `transport`.
    static func migrate(
        _ s: Scenario, listener: any MigrationListener, transport: any MigrationTransport,
        _ p: MigrationParameters = MigrationParameters()
    )
        async -> (Result<MigrationStatistics, any Error>, Result<IncomingStatistics, any Error>)
    {
        let destination = s.destination(p)
        let source = s.source(p)
        async let d = capture { try await destination.run(accepting: listener) }
        async let r = capture { try await source.run(to: transport) }
        return await (r, d)
    }

    @Test(arguments: ["127.0.0.1", "::1"])
    func migratesOverTCPLoopback(host: String) async throws {
        let listener: TCPListener
        do {
            listener = try TCPListener(host: host, port: 0)
        } catch {
            // No IPv6 loopback in this environment: nothing to test.
            try #require(host == "::1", "\(error)")
            return
        }
        #expect(listener.port != 0)
        var p = MigrationParameters()
        p.switchoverAck = true
        let s = try Scenario(device: DeviceHandler.Config())
        let (result, incoming) = await Self.migrate(s, listener: listener, transport: TCPTransport(host: host, port: listener.port), p)
        _ = try result.get()
        #expect(try incoming.get().returnPathOpened)
        s.expectIdenticalState()
    }

    @Test func migratesOverAUnixSocket() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "switchover-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        ).path
        let transport = try MigrationAddress(parsing: "unix:\(path)").transport
        let s = try Scenario()
        let (result, incoming) = await Self.migrate(s, listener: try transport.listen(), transport: transport)
        _ = try result.get()
        _ = try incoming.get()
        s.expectIdenticalState()
    }

    @Test func migratesToAFileAndLoadsFromIt() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "switchover-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).mig"
        ).path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let transport = try MigrationAddress(parsing: "file:\(path)").transport
        let s = try Scenario(device: DeviceHandler.Config(needsAck: false))
        let stats = try await s.source().run(to: transport)
        #expect(stats.downtimeEnd == .eofWritten && !stats.usedExtensions)
        #expect(s.sourceVM.stops == 1)
        let incoming = try await s.destination().run(from: transport)
        #expect(!incoming.returnPathOpened && !incoming.usedExtensions)
        #expect(incoming.bytesTransferred == stats.bytesTransferred)
        s.expectIdenticalState()
        // The file has QEMU's shape: no commands at all.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(try commandNames(bytes).isEmpty)
    }

    @Test func switchoverAckToAFileIsRefusedBeforeAnythingIsWritten() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("switchover-\(getpid())-ack.mig").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var p = MigrationParameters()
        p.switchoverAck = true
        let s = try Scenario()
        let result = await capture { try await s.source(p).run(to: FileTransport(path: path)) }
        guard try #require(result.error as? MigrationError).code == .invalidParameters else {
            Issue.record("\(String(describing: result))")
            return
        }
        s.expectSourceIntact()
    }

    @Test func migratesOverInheritedDescriptors() async throws {
        var fds: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        let (sourceFD, destinationFD) = (fds[0], fds[1])
        let s = try Scenario()
        let destination = s.destination()
        let source = s.source()
        async let d = capture { try await destination.run(from: try MigrationAddress(parsing: "fd:\(destinationFD)").transport) }
        async let r = capture { try await source.run(to: try MigrationAddress(parsing: "fd:\(sourceFD)").transport) }
        let (result, incoming) = await (r, d)
        _ = try result.get()
        #expect(try incoming.get().returnPathOpened)
        s.expectIdenticalState()
    }

    @Test func connectingToNobodyIsATransportError() async throws {
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let port = listener.port
        listener.close()
        let s = try Scenario()
        let result = await capture { try await s.source().run(to: TCPTransport(host: "127.0.0.1", port: port)) }
        let failure = try #require(result.error as? MigrationError)
        guard failure.code == .transport else {
            Issue.record("\(String(describing: result))")
            return
        }
        #expect(failure.phase == .connecting)
        #expect(s.sourceRAM.lifecycle.saveCleanups == [false], "cleanup runs even without a connection")
        #expect(s.sourceVM.isRunning && s.sourceVM.stops == 0)
    }

    @Test func aCancelledDestinationStopsListening() async throws {
        let listener = try TCPListener(host: "127.0.0.1", port: 0)
        let s = try Scenario()
        let destination = s.destination()
        let task = Task { try await destination.run(accepting: listener) }
        try await Task.sleep(for: .milliseconds(20))
        destination.cancel()
        guard try #require(await task.result.error as? MigrationError).code == .cancelled else {
            Issue.record("expected cancelled")
            return
        }
        #expect(s.destinationRAM.lifecycle.loadCleanups == [false])
    }

    @Test func theFaultInjectorDeliversExactlyTheBytesBeforeTheCut() throws {
        let (a, b) = try DescriptorConnection.socketPair()
        let faulty = FaultInjectingConnection(wrapping: a, fault: .cut(atOffset: 5))
        let bytes: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        #expect(throws: TransportError.injectedCut(offset: 5)) { try bytes.withUnsafeBytes { try faulty.write($0) } }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try b.read(into: $0) }
            if n == 0 { break }
            received += buffer[0..<n]
        }
        #expect(received == [1, 2, 3, 4, 5])
        a.close()
        b.close()
    }
}
