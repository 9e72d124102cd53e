import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the threads of one connection share: its timeouts, and whether it was shut down or
/// closed. ``DescriptorConnection`` keeps one, and so does a connection layered over it
/// (MigrationTLS's).
package final class ConnectionState: Sendable {
    private struct Fields {
        var readTimeout: Duration?
        var writeTimeout: Duration?
        var shutDown = false
        var closed = false
    }

    private let fields = Mutex(Fields())

    package init() {}

    package func setTimeouts(read: Duration?, write: Duration?) {
        fields.withLock { f in
            f.readTimeout = read
            f.writeTimeout = write
        }
    }

    /// The read timeout, and whether the connection was shut down (a read then ends at once).
    package var reading: (timeout: Duration?, shutDown: Bool) { fields.withLock { ($0.readTimeout, $0.shutDown) } }
    package var writeTimeout: Duration? { fields.withLock { $0.writeTimeout } }
    package var isShutDown: Bool { fields.withLock { $0.shutDown } }

    /// Marks the connection shut down; true the first time unless it was closed before: the
    /// caller then shuts down what it wraps.
    package func markShutDown() -> Bool {
        fields.withLock { f in
            defer { f.shutDown = true }
            return !f.shutDown && !f.closed
        }
    }

    /// Marks the connection closed; true the first time: the caller then releases what it wraps.
    package func markClosed() -> Bool {
        fields.withLock { f in
            defer { f.closed = true }
            return !f.closed
        }
    }
}

/// Waits until `fd` is ready for `events` (or hung up): a connection's bounded wait before a
/// read or write. Throws ``TransportError/timedOut(operation:after:)`` once `timeout` passed
/// (nil: wait for ever).
package func waitReady(_ fd: Int32, for events: Int16, timeout: Duration?, operation: @autoclosure () -> String) throws {
    try waitReady(fd, for: events, until: timeout.map { MonotonicClock().now + $0 }) {
        TransportError.timedOut(operation: operation(), after: timeout ?? .zero)
    }
}

/// Waits until `fd` is ready for `events` (or hung up), at the latest until `deadline` on
/// ``MonotonicClock`` (nil: for ever), past which it throws `timedOut()`: the one poll loop of the
/// connections' waits, also for a deadline shared by several waits (a TLS handshake's).
package func waitReady(_ fd: Int32, for events: Int16, until deadline: Duration?, timedOut: () -> any Error) throws {
    let clock = MonotonicClock()
    while true {
        var ms: Int32 = -1
        if let deadline {
            let left = deadline - clock.now
            if left <= .zero { throw timedOut() }
            ms = Int32(min(left.milliseconds.rounded(.up), 60_000))
        }
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let r = poll(&pfd, 1, ms)
        if r > 0 { return }
        if r < 0 && errno != EINTR { throw systemError("poll") }
    }
}
