import Foundation
import TestSupport
import Testing

/// `switchover migrate` and `incoming` with --tls-creds: two processes migrating over TLS with
/// mutual authentication, refusals reported by both, and plaintext refused across hosts.
@Suite(.enabled(if: opensslAvailable, "SKIPPED: the openssl command (Debian package openssl) is not installed"))
struct TLSCommandTests {
    static let machine = SwitchoverCommandTests.machine + ["--stall-timeout", "120s"]

    /// Runs both ends on a free loopback port; `source` and `destination` are their extra options.
    static func migrate(source: [String], destination: [String]) async throws -> (
        source: BuiltProduct.Result, destination: BuiltProduct.Result
    ) {
        let port = try freeLoopbackPort()
        let incoming = try RunningProduct(
            "switchover",
            ["incoming", "--listen", "tcp:127.0.0.1:\(port)", "--no-progress"]
                + machine + destination)
        let outgoing = try RunningProduct(
            "switchover",
            ["migrate", "--to", "tcp:127.0.0.1:\(port)", "--connect-timeout", "60s", "--no-progress"]
                + machine + source)
        let s = await outgoing.finish()
        let d = await incoming.finish()
        return (s, d)
    }

    static func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func twoProcessesMigrateOverTLSWithMutualAuthentication() async throws {
        let creds = try TestCredentials()
        let (source, destination) = try await Self.migrate(
            source: ["--tls-creds", creds.source, "--multifd-channels", "2", "--switchover-ack", "--json"],
            destination: [
                "--tls-creds", creds.destination, "--tls-authz", creds.clientSubject, "--multifd-channels", "2",
                "--switchover-ack", "--json"
            ])
        try #require(source.status == 0 && destination.status == 0, "\(source.stderr)\n\(destination.stderr)")
        #expect(destination.stderr.contains("(TLS, mutual authentication)"))
        let sent = try Self.object(source.stdout)
        let received = try Self.object(destination.stdout)
        #expect(sent["multifdChannels"] as? Int == 2)
        #expect((sent["multifdBytes"] as? Int ?? 0) > 0)
        let left = try #require(sent["digests"] as? [String: Any])
        let arrived = try #require(received["digests"] as? [String: Any])
        #expect(left["ram"] as? String != nil)
        #expect(left["ram"] as? String == arrived["ram"] as? String)
        let leftDevices = try #require(left["devices"] as? [[String: Any]])
        let arrivedDevices = try #require(arrived["devices"] as? [[String: Any]])
        #expect(leftDevices.count == 3)
        #expect(leftDevices.map { $0["hash"] as? String } == arrivedDevices.map { $0["hash"] as? String })
    }

    @Test func aSourceNotInTheAuthzListIsRefusedByBothProcesses() async throws {
        let creds = try TestCredentials()
        let (source, destination) = try await Self.migrate(
            source: ["--tls-creds", creds.source],
            destination: ["--tls-creds", creds.destination, "--tls-authz", "CN=another-source,O=Switchover Tests"])
        #expect(source.status == 1)
        #expect(destination.status == 1)
        #expect(source.stderr.contains("refused the TLS handshake"), "\(source.stderr)")
        #expect(destination.stderr.contains("\"\(creds.clientSubject)\" is not in the authorized list"), "\(destination.stderr)")
    }

    @Test func aPlaintextSourceIsRefusedByATLSDestination() async throws {
        let creds = try TestCredentials()
        let (source, destination) = try await Self.migrate(source: [], destination: ["--tls-creds", creds.destination])
        #expect(source.status == 1)
        #expect(destination.status == 1)
        #expect(destination.stderr.contains("the peer does not speak TLS (its first byte is 0x51)"), "\(destination.stderr)")
        #expect(source.stderr.hasPrefix("switchover migrate: "), "\(source.stderr)")
    }

    @Test func aTLSSourceIsRefusedByAPlaintextDestination() async throws {
        let creds = try TestCredentials()
        let (source, destination) = try await Self.migrate(source: ["--tls-creds", creds.source], destination: [])
        #expect(source.status == 1)
        #expect(destination.status == 1)
        #expect(source.stderr.contains("closed the connection during the TLS handshake"), "\(source.stderr)")
        #expect(
            destination.stderr.contains("found 0x16030100 (a TLS handshake: the source uses TLS, this end does not"),
            "\(destination.stderr)")
    }

    @Test func missingCredentialsFailBeforeConnecting() async throws {
        let creds = try TestCredentials()
        // The destination's directory holds no client files.
        let run = try await BuiltProduct.run(
            "switchover", ["migrate", "--to", "tcp:127.0.0.1:1", "--tls-creds", creds.destination] + Self.machine)
        #expect(run.status == 1)
        #expect(run.stderr.contains("client-cert.pem: No such file or directory"), "\(run.stderr)")
    }
}

/// Plaintext across hosts is refused (status 2) before anything starts; loopback is not.
@Suite struct InsecureAddressTests {
    @Test(arguments: [
        ["migrate", "--to", "tcp:10.0.0.2:4444", "--device", "mtty"],
        ["migrate", "--to", "tcp:[2001:db8::1]:4444", "--device", "mtty"],
        ["migrate", "--to", "tcp:dst.example:4444", "--device", "mtty"],
        ["incoming", "--listen", "tcp:0.0.0.0:0", "--device", "mtty"],
        ["incoming", "--listen", "tcp::0", "--device", "mtty"]
    ])
    func plaintextToAnotherHostNeedsTLSOrInsecure(arguments: [String]) async throws {
        let run = try await BuiltProduct.run("switchover", arguments)
        #expect(run.status == 2, "\(run.stderr)")
        #expect(run.stderr.contains("is not a loopback address: give --tls-creds DIR"), "\(run.stderr)")
    }

    @Test(arguments: [
        (["migrate", "--to", "tcp:10.0.0.2:4444", "--insecure", "--tls-creds", "/nonexistent"], "--insecure and --tls-creds contradict"),
        (["migrate", "--to", "file:/tmp/x", "--tls-creds", "/nonexistent"], "--tls-creds needs a socket address"),
        (["migrate", "--to", "unix:/tmp/x.sock", "--tls-creds", "/nonexistent"], "needs --tls-hostname"),
        (["migrate", "--to", "tcp:127.0.0.1:4444", "--tls-hostname", "x"], "--tls-hostname needs --tls-creds"),
        (["incoming", "--listen", "tcp:127.0.0.1:0", "--tls-authz", "CN=x"], "--tls-authz needs --tls-creds"),
        (["incoming", "--listen", "tcp:127.0.0.1:0", "--tls-min-version", "1.1", "--tls-creds", "/x"], "1.1")
    ])
    func inconsistentTLSOptionsAreUsageErrors(arguments: [String], message: String) async throws {
        let run = try await BuiltProduct.run("switchover", arguments)
        #expect(run.status == 2, "\(run.stderr)")
        #expect(run.stderr.contains(message), "\(run.stderr)")
    }
}
