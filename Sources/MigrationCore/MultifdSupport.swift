/// What a handler can send over the multifd channels (``MigrationHandler/multifdSupport``).
public struct MultifdSupport: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The stop-copy data as device-state packets (QEMU 10.0's `x-migration-multifd-transfer`):
    /// ``MigrationHandler/saveCompleteMultifd(to:context:)`` and
    /// ``MigrationHandler/loadStateBuffer(_:index:isConfigState:context:)``.
    public static let stopCopy = MultifdSupport(rawValue: 1 << 0)
    /// Also the pre-copy data (``MigrationParameters/multifdPrecopy``):
    /// ``MigrationHandler/saveIterateMultifd(to:budget:context:)``. Implies ``stopCopy``.
    public static let precopy = MultifdSupport(rawValue: 1 << 1)
}

/// Sends one handler's device-state packets over the multifd channels.
public protocol DeviceStateSender: AnyObject, Sendable {
    /// Queues one buffer; the engine assigns it the next index and a channel. The bytes are
    /// copied: the caller may reuse its buffer at once. Blocks while the channels' queues are
    /// full; throws when the transfer failed (a channel lost) so the handler stops.
    func send(_ buffer: UnsafeRawBufferPointer, isConfigState: Bool) throws
}
