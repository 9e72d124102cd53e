import ArgumentParser
import MigrationCore
import MigrationTLS

#if canImport(Glibc)
import Glibc
#endif

/// A TLS version on the command line: `1.2` or `1.3`.
extension TLSVersion: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "1.2": self = .tls12
        case "1.3": self = .tls13
        default: return nil
        }
    }

    public var defaultValueDescription: String { self == .tls12 ? "1.2" : "1.3" }
}

/// TLS on the migration channels, and the refusal to send a guest in the clear across hosts.
struct TLSOptions: ParsableArguments {
    @Option(
        name: .customLong("tls-creds"),
        help: ArgumentHelp(
            "Encrypt and mutually authenticate every channel with TLS, using the x509 files in DIR (QEMU's layout).",
            discussion: """
                ca-cert.pem (the CA both ends trust); server-cert.pem and server-key.pem (incoming); \
                client-cert.pem and client-key.pem (migrate); optional ca-crl.pem (revoked certificates). \
                See docs/security.md.
                """,
            valueName: "dir"))
    var credentials: String?

    @Option(
        name: .customLong("tls-min-version"),
        help: ArgumentHelp(
            "The oldest TLS version accepted: 1.3, or 1.2 when a peer needs it.", valueName: "version"))
    var minimumVersion: TLSVersion = .tls13

    @Flag(
        help: ArgumentHelp(
            "Allow tcp: to or from a non-loopback address without --tls-creds: the guest's memory and device state cross the network in the clear."
        ))
    var insecure = false

    /// Refuses what cannot work, and plaintext across hosts unless --insecure.
    func validate(_ address: MigrationAddress, option: String) throws {
        if credentials != nil && insecure { throw ValidationError("--insecure and --tls-creds contradict each other") }
        if credentials == nil && minimumVersion != .tls13 { throw ValidationError("--tls-min-version needs --tls-creds") }
        switch address {
        case .tcp(let host, _) where credentials == nil && !insecure && !Self.isLoopback(host):
            throw ValidationError(
                """
                \(option) \(address) is not a loopback address: give --tls-creds DIR to encrypt and authenticate \
                the migration (docs/security.md), or --insecure to send the guest's memory in the clear
                """)
        case .file where credentials != nil:
            throw ValidationError("--tls-creds needs a socket address (tcp:, unix:, fd:), not \(address)")
        default:
            break
        }
    }

    /// The TLS configuration of this end, when --tls-creds is given.
    func configuration(
        hostname: String? = nil, authorized: [String] = [], handshakeTimeout: Duration,
        awaitServerConfirmation: Bool = true
    ) -> TLSConfiguration? {
        guard let credentials else { return nil }
        var c = TLSConfiguration(directory: credentials, hostname: hostname, authorizedClients: authorized.isEmpty ? nil : authorized)
        c.minimumVersion = minimumVersion
        c.handshakeTimeout = handshakeTimeout
        c.awaitServerConfirmation = awaitServerConfirmation
        return c
    }

    /// `localhost`, 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z). An empty host (every
    /// address) and any other name are not.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host.hasSuffix(".localhost") { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { $0[0] } == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }
            return bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
        }
        return false
    }
}
