/// An in-process transport for tests, demos and benchmarks: every ``connect()`` creates a
/// Unix socketpair and queues its other end for the listener, so a source can open its main
/// connection and any number of multifd channels to a destination in the same process.
/// Connections made before ``listen()`` wait for it. One listener per transport.
public final class SocketPairTransport: MigrationTransport, Sendable {
    private struct State {
        var pending: [any MigrationConnection] = []
        var closed = false
        var connects = 0
    }

    private let state = Monitor(State())
    private let wrap: (@Sendable (_ index: Int, _ connection: DescriptorConnection) -> any MigrationConnection)?

    /// - Parameter wrapSource: wraps the source's end of the `index`-th connection (0 = the
    ///   first `connect()`, the main one for a ``MigrationSource``; then the channels in order),
    ///   e.g. in a ``FaultInjectingConnection``.
    public init(wrapSource: (@Sendable (_ index: Int, _ connection: DescriptorConnection) -> any MigrationConnection)? = nil) {
        self.wrap = wrapSource
    }

    public func connect() throws -> any MigrationConnection {
        let (a, b) = try DescriptorConnection.socketPair()
        let index = try state.update { s -> Int in
            guard !s.closed else { throw TransportError.connectionClosed(operation: "connect to a closed socketpair listener") }
            s.pending.append(b)
            defer { s.connects += 1 }
            return s.connects
        }
        return wrap?(index, a) ?? a
    }

    public func listen() throws -> any MigrationListener { Listener(transport: self) }

    fileprivate func accept() throws -> any MigrationConnection {
        let next = state.wait(timeout: nil) { s -> (any MigrationConnection)?? in
            if !s.pending.isEmpty { return .some(s.pending.removeFirst()) }
            if s.closed { return .some(nil) }
            return nil
        }
        guard let next = next ?? nil else { throw TransportError.shutDown }
        return next
    }

    fileprivate func closeListener() {
        let orphans = state.update { s -> [any MigrationConnection] in
            s.closed = true
            defer { s.pending.removeAll() }
            return s.pending
        }
        for c in orphans { c.close() }
    }

    private final class Listener: MigrationListener {
        let transport: SocketPairTransport
        init(transport: SocketPairTransport) { self.transport = transport }
        func accept() throws -> any MigrationConnection { try transport.accept() }
        func close() { transport.closeListener() }
    }
}
