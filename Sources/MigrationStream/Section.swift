/// The four kinds of section QEMU writes. A kind's value is the byte of the record that starts
/// such a section (``RecordType``).
public enum SectionKind: UInt8, Sendable, CustomStringConvertible {
    /// First section of a live (iterative) handler, from `save_setup`.
    case start = 0x01
    /// One iteration of a live handler, from `save_live_iterate`.
    case part = 0x02
    /// The last section of a live handler, from `save_complete` with the VM stopped.
    case end = 0x03
    /// The whole state of a non-iterative handler (or a live handler's config state).
    case full = 0x04

    /// The kind of section a record of this type starts; nil for the records that are not sections.
    public init?(_ record: RecordType) { self.init(rawValue: record.rawValue) }

    /// The record type that starts a section of this kind.
    public var recordType: RecordType {
        RecordType(rawValue: rawValue)!  // every kind's value is its record's (SectionKindTests)
    }

    /// The record's name in lower case: `start`, `part`, `end`, `full`.
    public var description: String { recordType.description.lowercased() }

    /// START and FULL headers carry idstr, instance and version; PART and END only the id.
    public var carriesIdentity: Bool { self == .start || self == .full }
}

/// What a START or FULL section binds a section id to: QEMU's (idstr, instance id, version
/// id), the identity a handler is registered under (MigrationCore's `HandlerIdentity`).
public struct SectionBinding: Sendable, Hashable, CustomStringConvertible {
    public var idstr: String
    public var instanceID: UInt32
    public var versionID: UInt32

    public init(idstr: String, instanceID: UInt32, versionID: UInt32) {
        (self.idstr, self.instanceID, self.versionID) = (idstr, instanceID, versionID)
    }

    public var description: String { "\(idstr) (instance \(instanceID), version \(versionID))" }
}

/// A section header. For PART and END sections the reader fills `binding` from the START or
/// FULL section that bound the id; the writer writes only the kind and the id for them.
public struct SectionHeader: Sendable, Hashable {
    public var kind: SectionKind
    public var sectionID: UInt32
    public var binding: SectionBinding

    public init(kind: SectionKind, sectionID: UInt32, binding: SectionBinding) {
        (self.kind, self.sectionID, self.binding) = (kind, sectionID, binding)
    }

    public init(kind: SectionKind, sectionID: UInt32, idstr: String, instanceID: UInt32, versionID: UInt32) {
        self.init(
            kind: kind, sectionID: sectionID,
            binding: SectionBinding(idstr: idstr, instanceID: instanceID, versionID: versionID))
    }

    /// Bytes this header takes on the wire.
    public var encodedLength: Int {
        kind.carriesIdentity ? 14 + binding.idstr.utf8.count : 5
    }
}

/// The configuration section that follows the file header.
public struct MachineConfiguration: Sendable, Hashable {
    /// The machine type, e.g. "pc-i440fx-7.2". Both ends must agree.
    public var machineType: String
    /// Subsection "configuration/target-page-bits", when present.
    public var targetPageBits: UInt32?
    /// Subsection "configuration/capabilities", when present.
    public var capabilities: [String]?
    /// Subsection "configuration/uuid" (16 bytes), when present.
    public var uuid: [UInt8]?

    public init(machineType: String, targetPageBits: UInt32? = nil, capabilities: [String]? = nil, uuid: [UInt8]? = nil) {
        (self.machineType, self.targetPageBits, self.capabilities, self.uuid) = (machineType, targetPageBits, capabilities, uuid)
    }

    static let pageBitsName = "configuration/target-page-bits"
    static let capabilitiesName = "configuration/capabilities"
    static let uuidName = "configuration/uuid"
    static let maxCapabilities: UInt32 = 64
}

/// One top-level record after the header and configuration.
public enum StreamRecord: Sendable, Hashable {
    /// A section header; its body follows and belongs to the section's owner, then a footer.
    case section(SectionHeader)
    /// A command (no footer).
    case command(MigrationCommand)
    /// `QEMU_VM_EOF`: the end of the device state; a VMDESCRIPTION trailer may follow.
    case eof
}
