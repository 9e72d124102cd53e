import Foundation
import MigrationCore
import MigrationTLS
import SystemPackage
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Debian's `openssl s_server` and `s_client` as the other end: our client to their server,
/// their client to our server, with mutual authentication, and refusals both ways.
@Suite(.enabled(if: opensslAvailable, "SKIPPED: the openssl command (Debian package openssl) is not installed"))
struct OpenSSLPeerTests {
    /// A port nothing listens on now.
    static func freePort() throws -> UInt16 {
        let probe = try TCPListener(host: "127.0.0.1", port: 0)
        defer { probe.close() }
        return probe.port
    }

    /// `openssl s_server` on `port`, answering each line reversed (-rev), once.
    static func sServer(port: UInt16, directory: String, extra: [String] = []) throws -> ChildProcess.Pending {
        try ChildProcess(
            try #require(opensslPath),
            [
                "s_server", "-accept", "127.0.0.1:\(port)", "-naccept", "1", "-rev",
                "-cert", directory + "/server-cert.pem", "-key", directory + "/server-key.pem",
                "-CAfile", directory + "/ca-cert.pem", "-Verify", "1", "-verify_return_error"
            ] + extra, errorOutput: .merged
        ).collect(limit: .seconds(60))
    }

    /// Connects while the server is not listening yet, for up to 20 s.
    static func connect(_ transport: TLSTransport) throws -> any MigrationConnection {
        let end = ContinuousClock.now + .seconds(20)
        while true {
            do {
                return try transport.connect()
            } catch TransportError.system(_, let code) where code == .connectionRefused && ContinuousClock.now < end {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    @Test func ourClientMigratesBytesToOpenSSLsServer() async throws {
        let creds = try TestCredentials()
        let serverDirectory = try creds.pki.directory("s_server", server: creds.server)
        let port = try Self.freePort()
        let server = try Self.sServer(port: port, directory: serverDirectory)
        let answer = await onThread { () throws -> String in
            let c = try Self.connect(
                TLSTransport(base: TCPTransport(host: "127.0.0.1", port: port), configuration: configuration(creds.source)))
            defer { c.close() }
            try write("switchover\n", c)
            return try readLine(c)
        }
        let output = await server.value
        #expect(try answer.get() == "revohctiws\n", "\(output)")
        // s_server verified our client certificate.
        #expect(output.stdout.contains("CN = switchover-source"), "\(output)")
    }

    @Test func openSSLsClientReachesOurServer() async throws {
        let creds = try TestCredentials()
        let clientDirectory = try creds.pki.directory("s_client", client: creds.client)
        let listening = try LoopbackServer(configuration(creds.destination, authorized: [creds.clientSubject]))
        let accepted = Spawned { () throws -> String in
            defer { listening.listener.close() }
            let c = try listening.listener.accept() as! TLSConnection
            defer { c.close() }
            try write("from the destination\n", c)
            return c.peerSubject
        }
        let client = try ChildProcess(
            try #require(opensslPath),
            [
                "s_client", "-connect", "127.0.0.1:\(listening.port)", "-ign_eof", "-verify_return_error",
                "-verify_hostname", "localhost", "-CAfile", clientDirectory + "/ca-cert.pem",
                "-cert", clientDirectory + "/client-cert.pem", "-key", clientDirectory + "/client-key.pem"
            ], errorOutput: .merged
        ).collect(limit: .seconds(60))
        let output = await client.value
        #expect(try await accepted.value.get() == creds.clientSubject)
        #expect(output.status == 0, "\(output)")
        #expect(output.stdout.contains("from the destination"), "\(output)")
        #expect(output.stdout.contains("Protocol  : TLSv1.3") || output.stdout.contains("TLSv1.3"), "\(output)")
    }

    @Test func aTLS12OnlyServerIsRefusedAsADowngrade() async throws {
        let creds = try TestCredentials()
        let serverDirectory = try creds.pki.directory("s_server12", server: creds.server)
        let port = try Self.freePort()
        let server = try Self.sServer(port: port, directory: serverDirectory, extra: ["-tls1_2"])
        let result = await onThread {
            try Self.connect(TLSTransport(base: TCPTransport(host: "127.0.0.1", port: port), configuration: configuration(creds.source)))
        }
        let output = await server.value
        #expect(isVersion(result.error), "\(String(describing: result.error))")
        #expect(output.stdout.contains("unsupported protocol"), "\(output)")
    }

    @Test func aTLS12OnlyClientIsRefusedAsADowngrade() async throws {
        let creds = try TestCredentials()
        let clientDirectory = try creds.pki.directory("s_client12", client: creds.client)
        let listening = try LoopbackServer(configuration(creds.destination))
        let accepted = Spawned { () throws -> Bool in
            defer { listening.listener.close() }
            _ = try listening.listener.accept()
            return true
        }
        let output = await
            (try ChildProcess(
                try #require(opensslPath),
                [
                    "s_client", "-connect", "127.0.0.1:\(listening.port)", "-tls1_2", "-CAfile", clientDirectory + "/ca-cert.pem",
                    "-cert", clientDirectory + "/client-cert.pem", "-key", clientDirectory + "/client-key.pem"
                ], errorOutput: .merged
            ).collect(limit: .seconds(60))).value
        let refusal = await accepted.value.error
        #expect(isVersion(refusal), "\(String(describing: refusal))")
        #expect(output.status != 0)
        #expect(output.stdout.contains("protocol version"), "\(output)")
    }

    @Test func aClientWithoutACertificateIsRefused() async throws {
        let creds = try TestCredentials()
        let listening = try LoopbackServer(configuration(creds.destination))
        let accepted = Spawned { () throws -> Bool in
            defer { listening.listener.close() }
            _ = try listening.listener.accept()
            return true
        }
        let output = await
            (try ChildProcess(
                try #require(opensslPath),
                [
                    "s_client", "-connect", "127.0.0.1:\(listening.port)", "-CAfile", creds.destination + "/ca-cert.pem"
                ], errorOutput: .merged
            ).collect(limit: .seconds(60))).value
        let refusal = await accepted.value.error
        #expect(refusal as? TLSError == .noPeerCertificate, "\(String(describing: refusal))")
        // In TLS 1.3 s_client finishes its side first: whether it prints our alert before it
        // exits depends on timing, so only our end's verdict is checked.
        _ = output
    }

    @Test func openSSLsServerWithAnUntrustedCertificateIsRefused() async throws {
        let creds = try TestCredentials()
        let other = try TestPKI(name: "Someone Else's CA")
        let rogue = try other.directory("rogue", server: other.issue("switchover-destination", server: true))
        let port = try Self.freePort()
        let server = try Self.sServer(port: port, directory: rogue)
        let result = await onThread {
            try Self.connect(TLSTransport(base: TCPTransport(host: "127.0.0.1", port: port), configuration: configuration(creds.source)))
        }
        let output = await server.value
        guard case .unknownCA = result.error as? TLSError else {
            Issue.record("\(String(describing: result.error))\n\(output)")
            return
        }
        #expect(output.stdout.contains("unknown ca"), "\(output)")
    }
}
