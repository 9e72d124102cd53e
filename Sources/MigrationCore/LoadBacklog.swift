/// What a destination handler holds received but not yet loaded
/// (``MigrationHandler/loadBacklog(context:)``).
public struct LoadBacklog: Sendable, Hashable {
    /// Bytes received and not yet loaded.
    public var bytes: UInt64
    /// The time loading them is expected to take from now, in microseconds.
    public var expectedMicros: UInt64

    public init(bytes: UInt64, expectedMicros: UInt64) { (self.bytes, self.expectedMicros) = (bytes, expectedMicros) }

    /// Nothing waiting: the handler is idle.
    public static let none = LoadBacklog(bytes: 0, expectedMicros: 0)
}
