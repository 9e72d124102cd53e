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
/// then, for a device with an MSI-X capability in its config space (QEMU's `msix_save`), the
/// MSI-X table (16 bytes a vector) and the pending bits ((vectors + 7) / 8 bytes), and no
/// subsection. The vector count comes from the capability's Message Control (table size + 1), on
/// each end from its own device, as QEMU takes it from its own.
///
/// The MSI-X table is not the device's to give: QEMU emulates it (the guest's vectors live in
/// QEMU, and vfio-pci hides the device's own table). A VMM with an MSI-X device passes
/// `msixTable` (what the guest programmed) and `msixLoad` (to program the vectors again and
/// enable MSI-X, as QEMU's loader does when the config space says it was on); a device with
/// MSI-X and no `msixTable` cannot be saved in this layout (a ``Refusal``).
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
    /// The VMM's MSI-X table and pending bits for `vectors` vectors (`16 · vectors` and
    /// `(vectors + 7) / 8` bytes).
    public typealias MSIXReader = @Sendable (_ vectors: Int) throws -> MSIX
    /// Where a destination's received MSI-X state goes (the VMM programs the vectors).
    public typealias MSIXWriter = @Sendable (MSIX) throws -> Void

    /// A device's MSI-X state as QEMU migrates it.
    public struct MSIX: Sendable, Hashable {
        /// The table: per vector, message address (8), data (4), vector control (4), little-endian.
        public var table: [UInt8]
        /// The pending bits, one per vector.
        public var pendingBits: [UInt8]
        public var vectors: Int { table.count / QEMUPCIConfigState.msixEntrySize }

        public init(table: [UInt8], pendingBits: [UInt8]) { (self.table, self.pendingBits) = (table, pendingBits) }
    }

    /// PCI_MSIX_ENTRY_SIZE.
    public static let msixEntrySize = 16
    /// PCI_CAP_ID_MSIX.
    static let msixCapabilityID: UInt8 = 0x11

    /// Why a config state was refused.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The decoded fields of a config state.
    public struct Fields: Sendable, Hashable {
        public var version: UInt32
        public var configSpace: [UInt8]
        public var interruptLevels: [UInt32]
        /// The MSI-X state, for a device with MSI-X.
        public var msix: MSIX?
    }

    /// True for a device QEMU treats as PCIe (4096 bytes of config space).
    public let express: Bool
    private let read: Reader
    private let write: Writer?
    private let msixTable: MSIXReader?
    private let msixLoad: MSIXWriter?
    private let received = Mutex<Fields?>(nil)
    /// The device's MSI-X vector count, once read from its config space (nil inside: none).
    private let vectorCount = Mutex<Int??>(nil)

    /// - Parameters:
    ///   - express: the device sits on a PCIe bus (QEMU then migrates 4096 bytes of config space).
    ///   - read: the device's config space; fewer bytes than the layout holds are padded with zeros.
    ///   - write: where the destination's config writes go; nil keeps the received state only.
    ///   - msixTable: for a device with MSI-X, the VMM's table and pending bits (see the type).
    ///   - msixLoad: for a device with MSI-X, where the received table goes on the destination.
    public init(
        express: Bool = true, read: @escaping Reader, write: Writer? = nil, msixTable: MSIXReader? = nil,
        msixLoad: MSIXWriter? = nil
    ) {
        self.express = express
        self.read = read
        self.write = write
        self.msixTable = msixTable
        self.msixLoad = msixLoad
    }

    public var configSpaceSize: Int { express ? Self.expressSize : Self.conventionalSize }

    /// 4 + the config space + 16 INTx bytes, plus the MSI-X table and pending bits when the
    /// device's config space has an MSI-X capability.
    public var byteCount: Int { 4 + configSpaceSize + 4 * Self.interruptPins + Self.msixBytes(vectors: msixVectors ?? 0) }

    /// The device's MSI-X vector count (its capability's table size + 1), nil without MSI-X or
    /// when its config space cannot be read; read once.
    public var msixVectors: Int? {
        if let known = vectorCount.withLock({ $0 }) { return known }
        let found = (try? read()).flatMap(Self.msixVectors(in:))
        vectorCount.withLock { $0 = .some(found) }
        return found
    }

    static func msixBytes(vectors: Int) -> Int { vectors * msixEntrySize + (vectors + 7) / 8 }

    /// Walks the capability list of a config space (bounded: at most 48 entries, each in
    /// 0x40..<0x100, so a loop or a pointer outside ends the walk) for the MSI-X capability's
    /// vector count.
    public static func msixVectors(in space: [UInt8]) -> Int? {
        guard space.count >= 0x40, space[0x06] & 0x10 != 0 else { return nil }  // Status: capability list
        var at = Int(space[0x34] & 0xFC)
        var seen = 0
        while at >= 0x40, at + 3 < min(space.count, conventionalSize), seen < 48 {
            if space[at] == msixCapabilityID {
                let control = UInt16(space[at + 2]) | UInt16(space[at + 3]) << 8
                return Int(control & 0x7FF) + 1
            }
            at = Int(space[at + 1] & 0xFC)
            seen += 1
        }
        return nil
    }

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
        if let vectors = Self.msixVectors(in: space) {
            guard let msixTable else {
                throw Refusal(
                    description:
                        "the device has MSI-X (\(vectors) vectors), whose table QEMU's layout carries and the VMM emulates: pass msixTable")
            }
            let msix = try msixTable(vectors)
            guard msix.table.count == vectors * Self.msixEntrySize, msix.pendingBits.count == (vectors + 7) / 8 else {
                throw Refusal(
                    description:
                        "MSI-X state of \(msix.table.count)+\(msix.pendingBits.count) bytes for \(vectors) vectors, expected \(vectors * Self.msixEntrySize)+\((vectors + 7) / 8)"
                )
            }
            bytes += msix.table + msix.pendingBits
        }
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
        if let msix = fields.msix { try msixLoad?(msix) }
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
        var msix: MSIX?
        if let vectors = msixVectors, vectors > 0 {
            let tableAt = 4 + configSpaceSize + 4 * Self.interruptPins
            let pendingAt = tableAt + vectors * Self.msixEntrySize
            msix = MSIX(table: Array(bytes[tableAt..<pendingAt]), pendingBits: Array(bytes[pendingAt...]))
        }
        return Fields(version: version, configSpace: space, interruptLevels: levels, msix: msix)
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
    /// `msixTable` and `msixLoad` as in ``init(express:read:write:msixTable:msixLoad:)``.
    public convenience init(
        device: any VFIOConfigSpaceAccess, express: Bool = true, msixTable: MSIXReader? = nil, msixLoad: MSIXWriter? = nil
    ) {
        let limit = express ? QEMUPCIConfigState.expressSize : QEMUPCIConfigState.conventionalSize
        self.init(
            express: express,
            read: {
                let size = min(try device.configSpaceSize(), limit)
                return try device.readConfigSpace(offset: 0, count: size)
            },
            write: { offset, bytes in
                try device.writeConfigSpace(offset: offset, bytes: bytes)
            }, msixTable: msixTable, msixLoad: msixLoad)
    }
}
