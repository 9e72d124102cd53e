import ExampleVM
import MigrationCore
import MigrationTLS
import TestSupport
import Testing

/// Whole migrations (example VM, simulated devices) whose main stream, return path and every
/// multifd channel are TLS connections.
@Suite(.enabled(if: opensslAvailable, "SKIPPED: the openssl command (Debian package openssl) is not installed"))
struct MigrationOverTLSTests {
    static let machine = ExampleMachineConfiguration(
        memoryBytes: 4 << 20, dirtyPagesPerSecond: 200,
        devices: [
            DeviceSpec(kind: .mlx5, stateBytes: 2 << 20, initialBytes: 1 << 20, loadCost: .milliseconds(20)),
            DeviceSpec(kind: .vfioPCI, stateBytes: 256 << 10, initialBytes: 64 << 10)
        ])

    /// TLS on both ends. A 120 s handshake deadline, as the stall timeout: the destination's
    /// engine starts from this process's cooperative pool, which other tests may hold.
    static func security(_ creds: TestCredentials, authorized: [String]? = nil) -> LoopbackSecurity {
        var serverConfiguration = configuration(creds.destination, authorized: authorized)
        serverConfiguration.handshakeTimeout = .seconds(120)
        var client = configuration(creds.source)
        client.handshakeTimeout = .seconds(120)
        let server = TLSTransport(base: TCPTransport(host: "127.0.0.1", port: 0), configuration: serverConfiguration)
        let clientConfiguration = client
        return LoopbackSecurity(
            listener: { try server.secure($0) },
            transport: { TLSTransport(base: $0, configuration: clientConfiguration) })
    }

    @Test(arguments: [0, 3])
    func everyChannelIsTLSAndTheStateArrivesByteIdentical(multifdChannels: Int) async throws {
        let creds = try TestCredentials()
        var parameters = multifdTestParameters(channels: multifdChannels)
        parameters.switchoverAck = true
        parameters.downtimeLimit = .seconds(2)
        let result = try await LoopbackMigration.run(
            Self.machine, parameters: parameters, timeout: .seconds(180),
            secure: Self.security(creds, authorized: [creds.clientSubject]))
        #expect(result.verification.verified, "\(result.verification.checks.filter { !$0.matches })")
        #expect(result.statistics.multifdChannels == multifdChannels)
        #expect((result.statistics.multifdBytes > 0) == (multifdChannels > 0))
        // The acknowledgements came back over the return path, inside TLS.
        #expect(result.statistics.handlers.dropFirst().allSatisfy { $0.ackState == .acknowledged })
    }

    @Test func aRefusedSourceFailsBothEnginesBeforeAnyStateMoves() async throws {
        let creds = try TestCredentials()
        var parameters = multifdTestParameters(channels: 2)
        parameters.downtimeLimit = .seconds(2)
        await #expect {
            try await LoopbackMigration.run(
                Self.machine, parameters: parameters, timeout: .seconds(180),
                secure: Self.security(creds, authorized: ["CN=someone-else"]))
        } throws: { error in
            guard let failure = error as? LoopbackMigrationError else { return false }
            let source = "\(failure.source.map { "\($0)" } ?? "")"
            let destination = "\(failure.destination.map { "\($0)" } ?? "")"
            return source.contains("refused the TLS handshake") && destination.contains("not in the authorized list")
                && failure.timedOut == nil
        }
    }
}
