import MigrationStream
import SystemPackage

/// A connected migration channel.
///
/// The source writes the main stream with ``/MigrationStream/ByteSink/write(_:)`` and reads the return path
/// with ``/MigrationStream/ByteSource/read(into:)`` (on its return-path thread, concurrently with the writes);
/// the destination does the opposite. A channel without a reverse direction (a file) says so
/// with ``supportsReturnPath``.
public protocol MigrationConnection: ByteSource, ByteSink, Sendable {
    /// Whether the channel carries the return path in the reverse direction.
    var supportsReturnPath: Bool { get }
    /// Bounds each blocked read and write (real time); nil waits forever. A read or write that
    /// makes no progress for that long throws ``TransportError/timedOut(operation:after:)``.
    func setTimeouts(read: Duration?, write: Duration?)
    /// Unblocks every blocked read and write, on any thread, and makes later ones fail
    /// (QEMU `qemu_file_shutdown`). Idempotent.
    func shutdown()
    /// Releases the channel. Call once no thread uses it any more. Idempotent.
    func close()
}

extension MigrationConnection {
    public func setTimeouts(read: Duration?, write: Duration?) {}
}

/// Waits for the incoming connection of a destination.
public protocol MigrationListener: AnyObject, Sendable {
    /// Blocks until the source connects (or the file is opened).
    func accept() throws -> any MigrationConnection
    /// Stops listening; a blocked ``accept()`` throws. Idempotent.
    func close()
}

/// A way to connect a source to a destination. Implement it to add a transport of your own.
public protocol MigrationTransport: Sendable {
    /// Source: opens the outgoing channel.
    func connect() throws -> any MigrationConnection
    /// Destination: starts listening (binding the address) for one incoming migration.
    func listen() throws -> any MigrationListener
}

extension ByteIOError {
    /// ``/MigrationStream/ByteIOError/code`` as swift-system's `Errno`, the errno type the rest
    /// of Switchover uses (MigrationStream depends on nothing, so it keeps the raw value).
    public var errno: Errno { Errno(rawValue: code) }
}

/// Shuts down and closes every connection of a migration that will not use them.
func abandon(_ connections: [any MigrationConnection]) {
    for c in connections {
        c.shutdown()
        c.close()
    }
}
