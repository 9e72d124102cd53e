/// Why a TLS channel could not be set up or failed. Each refusal has its own case, and both
/// ends report one: the end that refused names the reason, the refused end gets
/// ``refusedByPeer(alert:detail:)`` (or ``protocolVersion(_:)``).
public enum TLSError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A credential file is missing or unreadable, or a key does not match its certificate.
    case credentials(path: String, reason: String)
    /// The configuration cannot work (e.g. no hostname to verify the server against).
    case configuration(String)
    /// The peer does not speak TLS (a plaintext migration stream, say).
    case plaintextPeer(firstByte: UInt8)
    /// The peer's certificate is not signed by the CA we trust.
    case unknownCA(subject: String, detail: String)
    /// The peer's certificate has expired.
    case certificateExpired(subject: String, detail: String)
    /// The peer's certificate is not valid yet.
    case certificateNotYetValid(subject: String, detail: String)
    /// The destination's certificate does not carry the expected host name or address.
    case hostnameMismatch(expected: String, subject: String)
    /// The source's certificate is valid but its subject is not in the authorized list.
    case notAuthorized(subject: String)
    /// The peer's certificate is revoked by the CRL (`ca-crl.pem`).
    case certificateRevoked(subject: String)
    /// The peer presented no certificate.
    case noPeerCertificate
    /// The peer's certificate failed verification for another reason.
    case badCertificate(subject: String, detail: String)
    /// No protocol version both ends accept (a downgrade below the allowed version).
    case protocolVersion(String)
    /// The peer refused the handshake with this TLS alert (it did not accept our certificate,
    /// our name, or us).
    case refusedByPeer(alert: Int, detail: String)
    /// The peer closed the connection during the handshake (is it listening without TLS?).
    case peerClosedDuringHandshake
    /// The handshake did not finish in time.
    case handshakeTimedOut(after: Duration)
    /// Another failure of the TLS protocol (a corrupted record, say).
    case protocolFailure(String)

    public var description: String {
        switch self {
        case .credentials(let path, let reason): "TLS credentials \(path): \(reason)"
        case .configuration(let text): "TLS configuration: \(text)"
        case .plaintextPeer(let byte):
            "the peer does not speak TLS (its first byte is 0x\(String(byte, radix: 16))): is it migrating without TLS credentials?"
        case .unknownCA(let subject, let detail): "the peer's certificate (\(subject)) is not signed by our CA: \(detail)"
        case .certificateExpired(let subject, let detail): "the peer's certificate (\(subject)) has expired: \(detail)"
        case .certificateNotYetValid(let subject, let detail): "the peer's certificate (\(subject)) is not valid yet: \(detail)"
        case .hostnameMismatch(let expected, let subject):
            "the destination's certificate (\(subject)) is not valid for \"\(expected)\" (see --tls-hostname)"
        case .notAuthorized(let subject): "the source's certificate subject \"\(subject)\" is not in the authorized list (--tls-authz)"
        case .certificateRevoked(let subject): "the peer's certificate (\(subject)) is revoked (ca-crl.pem)"
        case .noPeerCertificate: "the peer presented no certificate"
        case .badCertificate(let subject, let detail): "the peer's certificate (\(subject)) was refused: \(detail)"
        case .protocolVersion(let detail): "no TLS version both ends accept (\(detail)); TLS 1.2 needs --tls-min-version 1.2 on both ends"
        case .refusedByPeer(let alert, let detail): "the peer refused the TLS handshake: \(detail) (alert \(alert))"
        case .peerClosedDuringHandshake: "the peer closed the connection during the TLS handshake: is it listening without TLS?"
        case .handshakeTimedOut(let after): "the TLS handshake did not finish within \(after)"
        case .protocolFailure(let detail): "TLS failure: \(detail)"
        }
    }
}
