// One encoding for every fixed-size ioctl argument: a layout lists its integer fields and their
// offsets once, and the byte encoder and decoder are written here, not per ioctl.

/// Little-endian field access into byte arrays, bounds-checked by the callers' size checks.
package enum LittleEndianBytes {
    package static func load<T: FixedWidthInteger>(_: T.Type, from bytes: some Collection<UInt8>, at offset: Int) -> T {
        var value: T = 0
        var index = bytes.index(bytes.startIndex, offsetBy: offset)
        for shift in stride(from: 0, to: T.bitWidth, by: 8) {
            value |= T(truncatingIfNeeded: bytes[index]) << shift
            index = bytes.index(after: index)
        }
        return value
    }

    package static func store<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        for (i, shift) in stride(from: 0, to: T.bitWidth, by: 8).enumerated() {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> shift)
        }
    }

    package static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: T.bitWidth, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> shift))
        }
    }
}

/// A fixed-size ioctl argument of the host ABI: little-endian integer fields at fixed offsets, every
/// other byte (padding, fields not modelled) zero. It encodes to and decodes from the exact bytes the
/// kernel reads and writes.
public protocol VFIOFixedLayout: Sendable, Equatable {
    /// The size of the argument in bytes.
    static var size: Int { get }
    /// The modelled fields, each an integer at its byte offset (within `size`).
    static var fields: [VFIOLayoutField<Self>] { get }
    /// The value with every field zero, which decoding fills in.
    static var zero: Self { get }
}

/// One integer field of a `VFIOFixedLayout`: where it sits and which property holds it.
public struct VFIOLayoutField<Layout> {
    fileprivate let load: (inout Layout, [UInt8]) -> Void
    fileprivate let store: (Layout, inout [UInt8]) -> Void

    /// The integer at `keyPath`, stored little-endian at byte `offset`.
    public static func field<T: FixedWidthInteger>(_ keyPath: WritableKeyPath<Layout, T>, at offset: Int) -> Self {
        Self(
            load: { layout, bytes in layout[keyPath: keyPath] = LittleEndianBytes.load(T.self, from: bytes, at: offset) },
            store: { layout, bytes in LittleEndianBytes.store(layout[keyPath: keyPath], into: &bytes, at: offset) })
    }
}

extension VFIOFixedLayout {
    /// Decodes the first `size` bytes; nil when fewer are given.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count >= Self.size else { return nil }
        let head = Array(bytes.prefix(Self.size))
        var value = Self.zero
        for field in Self.fields { field.load(&value, head) }
        self = value
    }

    /// The `size` bytes of the argument.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.size)
        for field in Self.fields { field.store(self, &out) }
        return out
    }
}
