/// How much state a handler still has to send, in bytes, split as QEMU splits it.
public struct PendingBytes: Sendable, Hashable {
    /// Bytes that must move before the switchover.
    public var mustPrecopy: UInt64
    /// Bytes that could move after it (postcopy); Switchover does not use postcopy, so the
    /// engine adds this to `mustPrecopy` when it decides.
    public var canPostcopy: UInt64

    public init(mustPrecopy: UInt64 = 0, canPostcopy: UInt64 = 0) { (self.mustPrecopy, self.canPostcopy) = (mustPrecopy, canPostcopy) }

    public static let zero = PendingBytes()

    /// Both figures together; `UInt64.max` when they do not fit (the figures come from devices).
    public var total: UInt64 { [mustPrecopy, canPostcopy].saturatingSum }

    /// The sum of each figure, saturating at `UInt64.max`.
    public static func + (a: PendingBytes, b: PendingBytes) -> PendingBytes {
        PendingBytes(mustPrecopy: [a.mustPrecopy, b.mustPrecopy].saturatingSum, canPostcopy: [a.canPostcopy, b.canPostcopy].saturatingSum)
    }
}

/// What one `saveIterate` call says about the handler's live data.
public enum IterationResult: Sendable, Hashable {
    /// More data remains (or may appear); keep iterating.
    case more
    /// Everything the handler has right now has been sent.
    case done
}
