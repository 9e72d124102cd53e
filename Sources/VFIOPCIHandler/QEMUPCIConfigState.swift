import Synchronization
import VFIO

/// The config state in QEMU 10's layout (`vmstate_vfio_pci_config` in hw/vfio/pci.c): what a
/// QEMU peer sends in the CONFIG_STATE of a vfio-pci FULL section and expects back.
///
/// Layout (all big-endian, no length prefix; docs/wire-format.md, "The config state"):
///
/// | bytes | field |
/// | --- | --- |
/// | 4 | the PCIDevice vmstate's `version_id`, 2 (QEMU refuses more than its own) |
/// | 256 or 4096 | the config space (4096 for a device on a PCIe bus, as on q35's root bus) |
/// | 16 | the INTx level of pins A–D, four be32 of 0 or 1 |
///
/// followed by the MSI-X table and pending bits only for a device with MSI-X (not supported
/// here: such a device's state has a size this type does not know), and no subsection.
///
/// The source reads the config space from the device (the VFIO config region); the destination
/// writes it back as QEMU's `vfio_pci_load_config` does: COMMAND with I/O and memory decoding
/// off, the six BARs, then COMMAND as received. A VMM that emulates parts of the config space
/// supplies its own ``VFIOPCIConfigState`` instead.
public final class QEMUPCIConfigState: VFIOPCIConfigState, Sendable {
    /// The PCIDevice vmstate version QEMU 10 writes (`pci_dev->version_id`).
    public static let pciDeviceVersion: UInt32 = 2
    /// PCI_NUM_PINS.
    public static let interruptPins = 4
    /// The conventional config space.
    public static let conventionalSize = 256
    /// The PCIe config space.
    public static let expressSize = 4096

    /// How the device's config space is read (the VFIO config region, or a VMM's model).
    public typealias Reader = @Sendable () throws -> [UInt8]
    /// How a config write reaches the device: (offset, little-endian bytes).
    public typealias Writer = @Sendable (_ offset: Int, _ bytes: [UInt8]) throws -> Void

    /// Why a config state was refused.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The decoded fields of a config state.
    public struct Fields: Sendable, Hashable {
        public var version: UInt32
        public var configSpace: [UInt8]
        public var interruptLevels: [UInt32]
    }

    /// True for a device QEMU treats as PCIe (4096 bytes of config space).
    public let express: Bool
    private let read: Reader
    private let write: Writer?
    private let received = Mutex<Fields?>(nil)

    /// - Parameters:
    ///   - express: the device sits on a PCIe bus (QEMU then migrates 4096 bytes of config space).
    ///   - read: the device's config space; fewer bytes than the layout holds are padded with zeros.
    ///   - write: where the destination's config writes go; nil keeps the received state only.
    public init(express: Bool = true, read: @escaping Reader, write: Writer? = nil) {
        self.express = express
        self.read = read
        self.write = write
    }

    public var configSpaceSize: Int { express ? Self.expressSize : Self.conventionalSize }

    public var byteCount: Int { 4 + configSpaceSize + 4 * Self.interruptPins }

    /// What the last ``load(_:)`` received, decoded.
    public var lastLoaded: Fields? { received.withLock { $0 } }

    public func save() throws -> [UInt8] {
        let space = try read()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        Self.appendBE32(Self.pciDeviceVersion, to: &bytes)
        bytes += space.prefix(configSpaceSize)
        bytes += [UInt8](repeating: 0, count: configSpaceSize - min(space.count, configSpaceSize))
        // INTx is not asserted with the device stopped: the levels are all 0.
        bytes += [UInt8](repeating: 0, count: 4 * Self.interruptPins)
        return bytes
    }

    public func load(_ bytes: [UInt8]) throws {
        let fields = try decode(bytes)
        received.withLock { $0 = fields }
        guard let write else { return }
        let space = fields.configSpace
        let command = UInt16(space[Self.command]) | UInt16(space[Self.command + 1]) << 8
        // As vfio_pci_load_config: decoding off while the BARs are rewritten, then COMMAND as sent.
        try write(Self.command, Self.le16(command & ~Self.decodeBits))
        for bar in 0..<6 {
            let at = Self.firstBAR + 4 * bar
            try write(at, Array(space[at..<at + 4]))
        }
        try write(Self.command, Self.le16(command))
    }

    /// Decodes a config state of exactly ``byteCount`` bytes; refuses a version above QEMU's
    /// or an INTx level other than 0 or 1, as QEMU's loader does.
    public func decode(_ bytes: [UInt8]) throws -> Fields {
        guard bytes.count == byteCount else {
            throw Refusal(description: "config state of \(bytes.count) bytes, expected \(byteCount)")
        }
        let version = Self.be32(bytes, at: 0)
        guard version >= 1, version <= Self.pciDeviceVersion else {
            throw Refusal(description: "PCIDevice version \(version), expected 1 to \(Self.pciDeviceVersion)")
        }
        let space = Array(bytes[4..<4 + configSpaceSize])
        var levels: [UInt32] = []
        for pin in 0..<Self.interruptPins {
            let level = Self.be32(bytes, at: 4 + configSpaceSize + 4 * pin)
            guard level <= 1 else { throw Refusal(description: "INTx level \(level) for pin \(pin), expected 0 or 1") }
            levels.append(level)
        }
        return Fields(version: version, configSpace: space, interruptLevels: levels)
    }

    static let command = 0x04
    static let firstBAR = 0x10
    /// PCI_COMMAND_IO | PCI_COMMAND_MEMORY.
    static let decodeBits: UInt16 = 0x3

    static func be32(_ bytes: [UInt8], at i: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[i + $1]) }
    }

    static func appendBE32(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [
            UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value)
        ]
    }

    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: value), UInt8(value >> 8)] }
}

extension QEMUPCIConfigState {
    /// The config state of a device with a VFIO config region: read from it (the whole region, up to
    /// the layout's size; zeros after a shorter region, e.g. mtty's 256 bytes in a PCIe layout), and
    /// written back into it on load.
    public convenience init(device: any VFIOConfigSpaceAccess, express: Bool = true) {
        let limit = express ? QEMUPCIConfigState.expressSize : QEMUPCIConfigState.conventionalSize
        self.init(
            express: express,
            read: {
                let size = min(try device.configSpaceSize(), limit)
                return try device.readConfigSpace(offset: 0, count: size)
            },
            write: { offset, bytes in
                try device.writeConfigSpace(offset: offset, bytes: bytes)
            })
    }
}
