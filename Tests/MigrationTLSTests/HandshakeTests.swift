import Foundation
import MigrationCore
import MigrationTLS
import TestSupport
import Testing

/// Our TLS client against our TLS server on TCP loopback: mutual authentication, and every
/// refusal as a typed error on both ends before a byte of migration data is accepted.
@Suite(.enabled(if: opensslAvailable, "SKIPPED: the openssl command (Debian package openssl) is not installed"))
struct HandshakeTests {
    @Test func mutuallyAuthenticatedTLS13CarriesDataBothWays() async throws {
        let creds = try TestCredentials()
        let (server, client) = try await handshake(
            server: configuration(creds.destination, authorized: [creds.clientSubject]),
            client: configuration(creds.source))
        #expect(try server.get() == "hello destination\n")
        #expect(try client.get() == "hello source\n")
    }

    @Test func theConnectionReportsVersionSuiteAndPeer() async throws {
        let creds = try TestCredentials()
        let listening = try LoopbackServer(configuration(creds.destination))
        let accepted = Spawned { () throws -> String in
            let c = try listening.listener.accept() as! TLSConnection
            defer { c.close() }
            return "\(c.version) \(c.peerSubject)"
        }
        let connected = await onThread { () throws -> String in
            let c = try listening.client(configuration(creds.source)).connect() as! TLSConnection
            defer { c.close() }
            return "\(c.version) \(c.cipherSuite) \(c.peerSubject)"
        }
        #expect(try await accepted.value.get() == "TLS 1.3 CN=switchover-source,O=Switchover Tests")
        #expect(try connected.get() == "TLS 1.3 TLS_AES_128_GCM_SHA256 CN=switchover-destination,O=Switchover Tests")
    }

    @Test func aServerCertificateFromAnotherCAIsRefused() async throws {
        let creds = try TestCredentials()
        let other = try TestPKI(name: "Someone Else's CA")
        let rogue = try other.directory("rogue-server", server: other.issue("switchover-destination", server: true))
        let (server, client) = try await handshake(server: configuration(rogue), client: configuration(creds.source))
        // The rogue server sends its CA's certificate along; either is what we cannot trust.
        guard case .unknownCA(let subject, _) = client.error as? TLSError else {
            Issue.record("client: \(String(describing: client.error))")
            return
        }
        #expect(["CN=switchover-destination,O=Switchover Tests", "CN=Someone Else's CA,O=Switchover Tests"].contains(subject))
        #expect(isRefusal(server.error, alert: 48), "\(String(describing: server.error))")
    }

    @Test func aClientCertificateFromAnotherCAIsRefused() async throws {
        let creds = try TestCredentials()
        let other = try TestPKI(name: "Someone Else's CA")
        let rogue = try creds.pki.directory("rogue-client", client: other.issue("switchover-source", server: false))
        let (server, client) = try await handshake(server: configuration(creds.destination), client: configuration(rogue))
        guard case .unknownCA(let subject, _) = server.error as? TLSError else {
            Issue.record("server: \(String(describing: server.error))")
            return
        }
        #expect(subject == "CN=switchover-source,O=Switchover Tests")
        #expect(isRefusal(client.error, alert: 48), "\(String(describing: client.error))")
    }

    @Test func anExpiredServerCertificateIsRefused() async throws {
        let creds = try TestCredentials()
        let expired = try creds.pki.directory(
            "expired-server",
            server: creds.pki.issue(
                "switchover-destination", server: true, validity: ("20200101000000Z", "20200201000000Z")))
        let (server, client) = try await handshake(server: configuration(expired), client: configuration(creds.source))
        guard case .certificateExpired(let subject, let detail) = client.error as? TLSError else {
            Issue.record("client: \(String(describing: client.error))")
            return
        }
        #expect(subject == "CN=switchover-destination,O=Switchover Tests")
        #expect(detail.contains("Feb  1 00:00:00 2020 GMT"))
        #expect(isRefusal(server.error, alert: 45), "\(String(describing: server.error))")
    }

    @Test func anExpiredClientCertificateIsRefused() async throws {
        let creds = try TestCredentials()
        let expired = try creds.pki.directory(
            "expired-client",
            client: creds.pki.issue(
                "switchover-source", server: false, validity: ("20200101000000Z", "20200201000000Z")))
        let (server, client) = try await handshake(server: configuration(creds.destination), client: configuration(expired))
        guard case .certificateExpired = server.error as? TLSError else {
            Issue.record("server: \(String(describing: server.error))")
            return
        }
        #expect(isRefusal(client.error, alert: 45), "\(String(describing: client.error))")
    }

    @Test func aCertificateNotYetValidIsRefused() async throws {
        let creds = try TestCredentials()
        let future = try creds.pki.directory(
            "future-server",
            server: creds.pki.issue(
                "switchover-destination", server: true, validity: ("20990101000000Z", "20991231000000Z")))
        let (server, client) = try await handshake(server: configuration(future), client: configuration(creds.source))
        guard case .certificateNotYetValid(_, let detail) = client.error as? TLSError else {
            Issue.record("client: \(String(describing: client.error))")
            return
        }
        #expect(detail.contains("2099"))
        #expect(
            isRefusal(server.error, alert: 45) || isRefusal(server.error, alert: 42) || isRefusal(server.error, alert: 46),
            "\(String(describing: server.error))")
    }

    @Test func aServerCertificateForAnotherHostIsRefused() async throws {
        let creds = try TestCredentials()
        let elsewhere = try creds.pki.directory(
            "elsewhere",
            server: creds.pki.issue(
                "elsewhere.example", server: true, names: ["DNS:elsewhere.example"]))
        let (server, client) = try await handshake(server: configuration(elsewhere), client: configuration(creds.source))
        #expect(client.error as? TLSError == .hostnameMismatch(expected: "127.0.0.1", subject: "CN=elsewhere.example,O=Switchover Tests"))
        #expect(refusedByPeer(server.error), "\(String(describing: server.error))")
        // The same certificate is fine for the name it carries.
        let (server2, client2) = try await handshake(
            server: configuration(elsewhere),
            client: configuration(creds.source, hostname: "elsewhere.example"))
        #expect(try client2.get() == "hello source\n")
        #expect(try server2.get() == "hello destination\n")
    }

    @Test func aClientNotInTheAuthorizedListIsRefused() async throws {
        let creds = try TestCredentials()
        let (server, client) = try await handshake(
            server: configuration(creds.destination, authorized: ["CN=another-source,O=Switchover Tests"]),
            client: configuration(creds.source))
        #expect(server.error as? TLSError == .notAuthorized(subject: "CN=switchover-source,O=Switchover Tests"))
        #expect(refusedByPeer(client.error), "\(String(describing: client.error))")
    }

    @Test func aRevokedClientCertificateIsRefused() async throws {
        let creds = try TestCredentials()
        let revoked = try creds.pki.issue("switchover-source", server: false)
        try creds.pki.revoke(revoked.certificate, crl: creds.pki.root + "/ca-crl.pem")
        let destination = try creds.pki.directory("with-crl", server: creds.server, crl: creds.pki.root + "/ca-crl.pem")
        let source = try creds.pki.directory("revoked-client", client: revoked)
        let (server, client) = try await handshake(server: configuration(destination), client: configuration(source))
        #expect(server.error as? TLSError == .certificateRevoked(subject: "CN=switchover-source,O=Switchover Tests"))
        #expect(isRefusal(client.error, alert: 44), "\(String(describing: client.error))")
        // A certificate the CRL does not list still passes.
        let (server2, client2) = try await handshake(server: configuration(destination), client: configuration(creds.source))
        #expect(try server2.get() == "hello destination\n")
        #expect(try client2.get() == "hello source\n")
    }

    @Test func aRevokedServerCertificateIsRefused() async throws {
        let creds = try TestCredentials()
        try creds.pki.revoke(creds.server.certificate, crl: creds.pki.root + "/ca-crl.pem")
        let source = try creds.pki.directory("client-with-crl", client: creds.client, crl: creds.pki.root + "/ca-crl.pem")
        let (server, client) = try await handshake(server: configuration(creds.destination), client: configuration(source))
        #expect(client.error as? TLSError == .certificateRevoked(subject: "CN=switchover-destination,O=Switchover Tests"))
        #expect(isRefusal(server.error, alert: 44), "\(String(describing: server.error))")
    }

    @Test func aDowngradeToTLS12IsRefusedUnlessBothEndsAllowIt() async throws {
        let creds = try TestCredentials()
        let (server, client) = try await handshake(
            server: configuration(creds.destination),
            client: configuration(creds.source, minimum: .tls12, maximum: .tls12))
        #expect(isVersion(server.error), "\(String(describing: server.error))")
        #expect(isVersion(client.error), "\(String(describing: client.error))")
        // Asked for on both ends, TLS 1.2 works (with mutual authentication).
        let (server12, client12) = try await handshake(
            server: configuration(creds.destination, minimum: .tls12),
            client: configuration(creds.source, minimum: .tls12, maximum: .tls12))
        #expect(try server12.get() == "hello destination\n")
        #expect(try client12.get() == "hello source\n")
    }

    @Test func aPlaintextClientIsRefusedAndTheServerSaysWhy() async throws {
        let creds = try TestCredentials()
        let listening = try LoopbackServer(configuration(creds.destination))
        let accepted = Spawned { () throws -> Int in
            defer { listening.listener.close() }
            _ = try listening.listener.accept()
            return 0
        }
        let plain = await onThread { () throws -> String in
            let c = try TCPTransport(host: "127.0.0.1", port: listening.port).connect()
            defer { c.close() }
            try write("QEVM\u{0}\u{0}\u{0}\u{3}", c)
            return try readLine(c)
        }
        let refusal = await accepted.value.error
        #expect(refusal as? TLSError == .plaintextPeer(firstByte: 0x51))
        // The plaintext end sees the connection end without an answer.
        switch plain {
        case .success(let text): #expect(text.isEmpty)
        case .failure(let error):
            #expect(error as? TransportError == .connectionClosed(operation: "read on tcp:127.0.0.1:\(listening.port)"))
        }
    }

    @Test func aPlaintextServerMakesTheClientFailDuringTheHandshake() async throws {
        let creds = try TestCredentials()
        let tcp = try TCPListener(host: "127.0.0.1", port: 0)
        let accepted = Spawned { () throws -> String in
            defer { tcp.close() }
            let c = try tcp.accept()
            defer { c.close() }
            var head = [UInt8](repeating: 0, count: 4)
            _ = try head.withUnsafeMutableBytes { try c.read(into: $0) }
            return head.map { String($0, radix: 16) }.joined(separator: " ")
        }
        let client = await onThread {
            try TLSTransport(base: TCPTransport(host: "127.0.0.1", port: tcp.port), configuration: configuration(creds.source)).connect()
        }
        // What a plaintext destination reads first is a TLS handshake record, not "QEVM".
        #expect(try await accepted.value.get().hasPrefix("16 3 1"))
        #expect(client.error as? TLSError == .peerClosedDuringHandshake)
    }

    @Test func aSilentPeerEndsTheHandshakeAtItsDeadline() async throws {
        let creds = try TestCredentials()
        let tcp = try TCPListener(host: "127.0.0.1", port: 0)
        var c = configuration(creds.source)
        c.handshakeTimeout = .milliseconds(300)
        let quiet = c
        let held = Spawned { () throws -> Bool in
            let held = try tcp.accept()
            Thread.sleep(forTimeInterval: 2)
            held.close()
            return true
        }
        let client = await onThread {
            try TLSTransport(base: TCPTransport(host: "127.0.0.1", port: tcp.port), configuration: quiet).connect()
        }
        #expect(client.error as? TLSError == .handshakeTimedOut(after: .milliseconds(300)))
        _ = await held.value
        tcp.close()
    }

    @Test func writingToAPeerThatHasGoneIsAnErrorNotSIGPIPE() async throws {
        let creds = try TestCredentials()
        let listening = try LoopbackServer(configuration(creds.destination))
        let accepted = Spawned { () throws -> Bool in
            defer { listening.listener.close() }
            try listening.listener.accept().close()
            return true
        }
        let written = await onThread { () throws -> Int in
            let c = try listening.client(configuration(creds.source)).connect()
            defer { c.close() }
            // Wait for the server's close (its close_notify reads as the end).
            guard try readLine(c).isEmpty else { return -1 }
            let chunk = [UInt8](repeating: 0x5A, count: 1 << 20)
            // The peer is gone: within a few writes the kernel says so (EPIPE, ECONNRESET).
            for _ in 0..<64 { try chunk.withUnsafeBytes { try c.write($0) } }
            return 64
        }
        #expect(try await accepted.value.get())
        #expect(written.error is TransportError, "\(String(describing: written))")
    }

    @Test func missingCredentialsAreReportedBeforeConnecting() throws {
        let creds = try TestCredentials()
        // The source's directory has no server files.
        let transport = TLSTransport(base: TCPTransport(host: "127.0.0.1", port: 1), configuration: configuration(creds.source))
        #expect(throws: TLSError.credentials(path: creds.source + "/server-cert.pem", reason: "No such file or directory")) {
            try transport.checkCredentials(server: true)
        }
        try transport.checkCredentials(server: false)
    }
}

func detail(_ error: TLSError) -> String {
    if case .unknownCA(_, let d) = error { return d }
    return ""
}

func isRefusal(_ error: (any Error)?, alert: Int) -> Bool {
    if case .refusedByPeer(let a, _) = error as? TLSError { return a == alert }
    return false
}

func refusedByPeer(_ error: (any Error)?) -> Bool {
    if case .refusedByPeer = error as? TLSError { return true }
    return false
}

func isVersion(_ error: (any Error)?) -> Bool {
    if case .protocolVersion = error as? TLSError { return true }
    return false
}
