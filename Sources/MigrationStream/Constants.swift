/// Numbers that QEMU puts on the wire (migration/savevm.h, migration/migration.h).
public enum SavevmFormat {
    /// `QEMU_VM_FILE_MAGIC`, "QEVM".
    public static let magic: UInt32 = 0x5145_564D
    /// `QEMU_VM_FILE_VERSION`: the only version we read and write.
    public static let version: UInt32 = 3
    /// `QEMU_VM_FILE_VERSION_COMPAT`: the obsolete v2 format, refused by name.
    public static let obsoleteVersion: UInt32 = 2
    /// The configuration section's machine-name length bound (QEMU machine names are short).
    public static let maxMachineNameLength = 256
    /// QEMU's source reader bound for one return-path message payload.
    public static let maxReturnPathPayload = 512
    /// Our bound for the VMDESCRIPTION JSON trailer (QEMU's for a 16 MiB guest is ~100 KiB).
    public static let maxVMDescriptionLength = 64 << 20
}

/// The byte that starts each top-level record of the stream (`QEMU_VM_*`).
public enum RecordType: UInt8, Sendable, CustomStringConvertible {
    case eof = 0x00
    case sectionStart = 0x01
    case sectionPart = 0x02
    case sectionEnd = 0x03
    case sectionFull = 0x04
    case subsection = 0x05
    case vmDescription = 0x06
    case configuration = 0x07
    case command = 0x08
    case sectionFooter = 0x7E

    public var description: String {
        switch self {
        case .eof: "EOF"
        case .sectionStart: "START"
        case .sectionPart: "PART"
        case .sectionEnd: "END"
        case .sectionFull: "FULL"
        case .subsection: "SUBSECTION"
        case .vmDescription: "VMDESCRIPTION"
        case .configuration: "CONFIGURATION"
        case .command: "COMMAND"
        case .sectionFooter: "FOOTER"
        }
    }
}
