/// A TLS protocol version.
public enum TLSVersion: Int, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// TLS 1.2: only when asked for (``TLSConfiguration/minimumVersion``).
    case tls12 = 0x0303
    /// TLS 1.3: the default.
    case tls13 = 0x0304

    public static func < (a: TLSVersion, b: TLSVersion) -> Bool { a.rawValue < b.rawValue }

    public var description: String { self == .tls12 ? "TLS 1.2" : "TLS 1.3" }
}

/// x509 credentials in QEMU's `tls-creds-x509` directory layout, so the same directory serves
/// a QEMU peer: `ca-cert.pem` (the CA both ends trust), `server-cert.pem` and `server-key.pem`
/// (the destination's identity), `client-cert.pem` and `client-key.pem` (the source's),
/// and an optional `ca-crl.pem` (revoked certificates).
public struct TLSCredentials: Sendable, Hashable {
    /// The directory holding the PEM files.
    public var directory: String

    public init(directory: String) { self.directory = directory }

    /// `ca-cert.pem`.
    public var caCertificate: String { path("ca-cert.pem") }
    /// `ca-crl.pem` (optional: used when the file exists).
    public var revocationList: String { path("ca-crl.pem") }
    /// `server-cert.pem` or `client-cert.pem`.
    public func certificate(server: Bool) -> String { path(server ? "server-cert.pem" : "client-cert.pem") }
    /// `server-key.pem` or `client-key.pem`.
    public func privateKey(server: Bool) -> String { path(server ? "server-key.pem" : "client-key.pem") }

    private func path(_ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}

/// How a migration's channels are secured: mutual authentication with x509 certificates.
///
/// The source (client) verifies the destination's certificate against the CA and
/// ``hostname``; the destination (server) requires a client certificate from the same CA and,
/// with ``authorizedClients``, one of the listed subjects.
public struct TLSConfiguration: Sendable, Hashable {
    /// Where the certificates and keys are.
    public var credentials: TLSCredentials

    /// Source: the name (DNS name or IP address) the destination's certificate must carry
    /// (QEMU `tls-hostname`). nil: the host of a ``/MigrationCore/TCPTransport``.
    public var hostname: String?

    /// Destination: the certificate subjects accepted from a source, in RFC 2253 form as
    /// QEMU's `authz-list` compares them (`CN=source.example,O=Example`). nil: any
    /// certificate the CA signed.
    public var authorizedClients: [String]?

    /// The oldest version accepted. TLS 1.3 unless 1.2 is asked for.
    public var minimumVersion: TLSVersion = .tls13

    /// The newest version offered (tests lower it to play an old peer).
    public var maximumVersion: TLSVersion = .tls13

    /// The longest a handshake may take, from the connection to its confirmation.
    public var handshakeTimeout: Duration = .seconds(10)

    /// Source, TLS 1.3: after the handshake, wait (within ``handshakeTimeout``) for the
    /// destination's session ticket, which it sends only once it accepted our certificate, so
    /// that a refusal is reported before any guest state is sent. OpenSSL servers send one;
    /// GnuTLS (a QEMU destination) sends none unless configured to: turn this off there.
    public var awaitServerConfirmation = true

    public init(credentials: TLSCredentials, hostname: String? = nil, authorizedClients: [String]? = nil) {
        (self.credentials, self.hostname, self.authorizedClients) = (credentials, hostname, authorizedClients)
    }

    /// The configuration for credentials in `directory`.
    public init(directory: String, hostname: String? = nil, authorizedClients: [String]? = nil) {
        self.init(credentials: TLSCredentials(directory: directory), hostname: hostname, authorizedClients: authorizedClients)
    }
}
