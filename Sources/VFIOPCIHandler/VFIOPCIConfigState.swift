import Synchronization

/// The device's config-space state carried in the FULL section (QEMU: the vfio-pci vmstate
/// with PCI config space and MSI-X). The VMM owns it; the handler only moves its bytes.
///
/// QEMU's config vmstate has no length prefix, so both ends must agree on ``byteCount``
/// (they do for the same device model); the destination refuses a mismatch.
public protocol VFIOPCIConfigState: AnyObject, Sendable {
    /// The number of bytes ``save()`` returns and ``load(_:)`` expects.
    var byteCount: Int { get }
    /// The source's config state, taken with the VM stopped.
    func save() throws -> [UInt8]
    /// Applies the received config state on the destination.
    func load(_ bytes: [UInt8]) throws
}

/// A config state kept as plain bytes: the PCI config space snapshot of a device model.
public final class PCIConfigSnapshot: VFIOPCIConfigState {
    /// The largest config state accepted (PCIe extended config space).
    public static let maxBytes = 4096

    private let storage: Mutex<[UInt8]>

    public init(bytes: [UInt8]) {
        storage = Mutex(Array(bytes.prefix(Self.maxBytes)))
    }

    /// A deterministic 256-byte config space for a simulated device.
    public convenience init(simulatedFor name: String) {
        var bytes = [UInt8](repeating: 0, count: 256)
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        for i in bytes.indices {
            h ^= h << 13
            h ^= h >> 7
            h ^= h << 17
            bytes[i] = UInt8(truncatingIfNeeded: h)
        }
        self.init(bytes: bytes)
    }

    public var byteCount: Int { storage.withLock { $0.count } }
    public var bytes: [UInt8] { storage.withLock { $0 } }
    public func save() throws -> [UInt8] { bytes }
    public func load(_ bytes: [UInt8]) throws { storage.withLock { $0 = bytes } }
}
