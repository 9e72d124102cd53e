import CSwitchoverTLS
import MigrationCore
import Synchronization

/// Secures every connection of another transport with TLS and mutual x509 authentication:
/// the main stream with its return path and each multifd channel.
///
/// ```swift
/// let tls = TLSConfiguration(directory: "/etc/pki/qemu")
/// let address = try MigrationAddress(parsing: "tcp:dst.example:4444")
/// try await source.run(to: TLSTransport(base: address.transport, configuration: tls))
/// ```
///
/// The base transport's connections must be sockets (``/MigrationCore/TCPTransport``,
/// ``/MigrationCore/UnixSocketTransport``, ``/MigrationCore/SocketPairTransport``). Every
/// handshake ends within ``TLSConfiguration/handshakeTimeout``, before any migration byte is
/// sent: a refusal is a ``TLSError`` on both ends.
public struct TLSTransport: MigrationTransport {
    public let base: any MigrationTransport
    public let configuration: TLSConfiguration
    private let contexts = ContextCache()

    public init(base: any MigrationTransport, configuration: TLSConfiguration) { (self.base, self.configuration) = (base, configuration) }

    /// The name the destination's certificate must carry: ``TLSConfiguration/hostname``, else
    /// the host of a TCP address.
    public var expectedHostname: String? {
        if let name = configuration.hostname { return name }
        if let tcp = base as? TCPTransport, !tcp.host.isEmpty { return tcp.host }
        return nil
    }

    /// Loads the credentials of one end (the source's client files, or the destination's
    /// server files) so that a missing or bad file is reported before anything connects.
    public func checkCredentials(server: Bool) throws {
        _ = try contexts.context(configuration, server: server)
    }

    public func connect() throws -> any MigrationConnection {
        guard let hostname = expectedHostname else {
            throw TLSError.configuration("no host name to verify the destination's certificate against: set the hostname (--tls-hostname)")
        }
        let context = try contexts.context(configuration, server: false)
        let connection = try base.connect()
        return try secureConnection(connection, context: context, hostname: hostname)
    }

    public func listen() throws -> any MigrationListener {
        let context = try contexts.context(configuration, server: true)
        return TLSListener(base: try base.listen(), context: context)
    }

    /// Secures a listener made elsewhere (a ``/MigrationCore/TCPListener`` on port 0, for
    /// ``/MigrationCore/MigrationDestination/run(accepting:)``) with this transport's server
    /// credentials.
    public func secure(_ listener: any MigrationListener) throws -> TLSListener {
        TLSListener(base: listener, context: try contexts.context(configuration, server: true))
    }
}

/// Accepts connections from a base listener and runs the server handshake on each.
public final class TLSListener: MigrationListener {
    public let base: any MigrationListener
    private let context: TLSContext

    init(base: any MigrationListener, context: TLSContext) { (self.base, self.context) = (base, context) }

    /// Accepts the next connection and completes its handshake; a peer refused by it is a
    /// thrown ``TLSError`` (the migration does not wait for another).
    public func accept() throws -> any MigrationConnection {
        try secureConnection(try base.accept(), context: context, hostname: nil)
    }

    public func close() { base.close() }
}

private func secureConnection(_ connection: any MigrationConnection, context: TLSContext, hostname: String?) throws -> TLSConnection {
    guard let socket = connection as? DescriptorConnection, socket.supportsReturnPath else {
        connection.close()
        throw TLSError.configuration("TLS needs a socket connection, not \(connection)")
    }
    return try TLSConnection(base: socket, context: context, hostname: hostname)
}

/// The two contexts of a transport, loaded on first use.
private final class ContextCache: Sendable {
    private let loaded = Mutex<(client: TLSContext?, server: TLSContext?)>((nil, nil))

    func context(_ configuration: TLSConfiguration, server: Bool) throws -> TLSContext {
        try loaded.withLock { pair in
            if let existing = server ? pair.server : pair.client { return existing }
            let made = try TLSContext(configuration, server: server)
            if server { pair.server = made } else { pair.client = made }
            return made
        }
    }
}
