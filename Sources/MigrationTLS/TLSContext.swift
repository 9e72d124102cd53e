import CSwitchoverTLS

#if canImport(Glibc)
import Glibc
#endif

/// One role's loaded credentials (an OpenSSL `SSL_CTX`): made once per transport and role,
/// then shared by every connection.
final class TLSContext: @unchecked Sendable {
    // @unchecked: the SSL_CTX is only read after init; OpenSSL makes sessions from it on any thread.
    let pointer: OpaquePointer
    let server: Bool
    let configuration: TLSConfiguration

    init(_ configuration: TLSConfiguration, server: Bool) throws {
        let credentials = configuration.credentials
        guard configuration.minimumVersion <= configuration.maximumVersion else {
            throw TLSError.configuration(
                "the minimum version \(configuration.minimumVersion) is above the maximum \(configuration.maximumVersion)")
        }
        var message = [CChar](repeating: 0, count: 512)
        func reason() -> String { string(fromC: message) }
        guard
            let ctx = swo_tls_ctx_new(
                server ? 1 : 0, Int32(configuration.minimumVersion.rawValue),
                Int32(configuration.maximumVersion.rawValue), &message, message.count)
        else {
            throw TLSError.configuration(reason())
        }
        self.pointer = ctx
        self.server = server
        self.configuration = configuration
        let certificate = credentials.certificate(server: server)
        let key = credentials.privateKey(server: server)
        for path in [credentials.caCertificate, certificate, key] where access(path, R_OK) != 0 {
            throw TLSError.credentials(path: path, reason: String(cString: strerror(errno)))
        }
        guard swo_tls_ctx_load_ca(ctx, credentials.caCertificate, &message, message.count) == 1 else {
            throw TLSError.credentials(path: credentials.caCertificate, reason: reason())
        }
        guard swo_tls_ctx_load_identity(ctx, certificate, key, &message, message.count) == 1 else {
            throw TLSError.credentials(path: certificate, reason: reason())
        }
        if access(credentials.revocationList, F_OK) == 0 {
            guard swo_tls_ctx_load_crl(ctx, credentials.revocationList, &message, message.count) == 1 else {
                throw TLSError.credentials(path: credentials.revocationList, reason: reason())
            }
        }
        if server, let names = configuration.authorizedClients {
            guard !names.isEmpty else { throw TLSError.configuration("an empty list of authorized clients admits nobody") }
            for name in names where swo_tls_ctx_add_authorized(ctx, name) != 1 {
                throw TLSError.configuration("out of memory adding \(name)")
            }
        }
    }

    deinit { swo_tls_ctx_free(pointer) }
}

/// The text of a NUL-terminated C buffer (all of it when there is no NUL).
func string(fromC buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
