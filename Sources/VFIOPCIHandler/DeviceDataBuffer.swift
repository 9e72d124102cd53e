/// A page-aligned buffer for device data, owned by this object: the memory lives as long as
/// any reference to the buffer does, so a handler that lends its pointer to a read or a write
/// keeps the buffer alive for that long by holding the reference, even if its owner (a
/// handler, a tuning) has meanwhile replaced the buffer with a larger one. Nothing else
/// frees it.
public final class DeviceDataBuffer: @unchecked Sendable {
    // @unchecked: it owns raw memory the compiler cannot see into. The pointer and size never
    // change after init; the bytes are written by one hook at a time (the engine's threading
    // contract: the handler's migration or load thread), and freed only in deinit, when no
    // reference (and so no lent pointer) is left.
    private let storage: UnsafeMutableRawBufferPointer

    /// Allocates `byteCount` bytes (at least 1), aligned to a 4 KiB page. With `prefault`, every
    /// page is written once now, so the page faults are paid before the buffer is needed.
    public init(byteCount: Int, prefault: Bool = false) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, byteCount), alignment: 4096)
        if prefault { storage.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    deinit { storage.deallocate() }

    /// The buffer's size in bytes.
    public var count: Int { storage.count }

    /// Lends the first `count` bytes (at most the buffer's size) for the duration of `body`.
    public func withBytes<R>(upTo count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) {
            try body(UnsafeMutableRawBufferPointer(rebasing: storage[..<min(max(0, count), storage.count)]))
        }
    }
}
