import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `fd:N`: an open descriptor handed over by the VMM; the connection takes ownership. A
/// socket carries the return path; anything else does not.
public struct DescriptorTransport: MigrationTransport {
    public var fd: Int32

    public init(fd: Int32) { self.fd = fd }

    public func connect() throws -> any MigrationConnection {
        DescriptorConnection(fd: fd)
    }

    public func listen() throws -> any MigrationListener {
        OnceListener { [fd] in DescriptorConnection(fd: fd) }
    }
}

/// A listener whose `accept` opens something once (a file, a given descriptor).
final class OnceListener: MigrationListener {
    private let open: @Sendable () throws -> any MigrationConnection
    private let used = Mutex(false)

    init(_ open: @escaping @Sendable () throws -> any MigrationConnection) { self.open = open }

    func accept() throws -> any MigrationConnection {
        let first = used.withLock { u -> Bool in
            defer { u = true }
            return !u
        }
        guard first else { throw TransportError.shutDown }
        return try open()
    }

    func close() { used.withLock { $0 = true } }
}
