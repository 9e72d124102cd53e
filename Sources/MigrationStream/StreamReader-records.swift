extension StreamReader {
    /// Reads the file header (magic and version 3). Version 2 is refused by name.
    public func readFileHeader() throws {
        let at = offset
        let magic = try readBE32("the file magic")
        guard magic == SavevmFormat.magic else { throw StreamError.badMagic(offset: at, found: magic) }
        let vat = offset
        let version = try readBE32("the file version")
        if version == SavevmFormat.obsoleteVersion { throw StreamError.obsoleteVersion(offset: vat) }
        guard version == SavevmFormat.version else { throw StreamError.unsupportedVersion(offset: vat, found: version) }
    }

    /// Reads the configuration section (type 0x07, be32 name length, name, subsections).
    public func readConfiguration() throws -> MachineConfiguration {
        let at = offset
        let type = try readU8("the configuration section (0x07)")
        guard type == RecordType.configuration.rawValue else {
            throw StreamError.unexpectedRecord(offset: at, found: describe(type), expected: "the configuration section (0x07)")
        }
        let len = try readLength("the machine name length", field: "machine name", limit: SavevmFormat.maxMachineNameLength)
        let name = String(decoding: try readBytes(Int(len), "the machine name"), as: UTF8.self)
        var config = MachineConfiguration(machineType: name)
        // Subsections: 0x05, counted name that starts with "configuration/", be32 version.
        while try peekU8() == RecordType.subsection.rawValue {
            // A record type 0x05 never starts a top-level record, so a peeked 0x05 is ours.
            let subAt = offset
            _ = try readU8()
            let subName = try readCountedString("a configuration subsection name")
            let version = try readBE32("the version of \(subName)")
            guard version == 1 else {
                throw StreamError.invalidField(offset: subAt, field: subName, reason: "version \(version), expected 1")
            }
            switch subName {
            case MachineConfiguration.pageBitsName:
                config.targetPageBits = try readBE32("target page bits")
            case MachineConfiguration.capabilitiesName:
                let count = try readLength("the capability count", field: "capability count", limit: MachineConfiguration.maxCapabilities)
                var caps: [String] = []
                for _ in 0..<count { caps.append(try readCountedString("a capability name")) }
                config.capabilities = caps
            case MachineConfiguration.uuidName:
                config.uuid = try readBytes(16, "the VM uuid")
            default:
                throw StreamError.invalidField(
                    offset: subAt, field: "configuration subsection", reason: "unknown subsection \"\(subName)\"")
            }
        }
        return config
    }

    /// Reads the next top-level record: a section header, a command, or EOF.
    /// For PART and END sections the binding comes from the START/FULL section with that id.
    public func readRecord() throws -> StreamRecord {
        let at = offset
        let byte = try readU8("a record type (section, command or EOF)")
        guard let type = RecordType(rawValue: byte) else {
            throw StreamError.unknownRecordType(offset: at, found: byte)
        }
        switch type {
        case .eof:
            return .eof
        case .sectionStart, .sectionPart, .sectionEnd, .sectionFull:
            return .section(try readSectionHeader(SectionKind(type)!, at: at))
        case .command:
            return .command(try readCommandBody(at: at))
        case .subsection, .vmDescription, .configuration, .sectionFooter:
            throw StreamError.unexpectedRecord(offset: at, found: type.description, expected: "a section, command or EOF")
        }
    }

    /// The rest of a section header after its record byte: a START/FULL header binds its id to
    /// (idstr, instance, version); a PART/END header names an id bound before.
    private func readSectionHeader(_ kind: SectionKind, at: Int) throws -> SectionHeader {
        let id = try readBE32("the section id")
        guard kind.carriesIdentity else {
            guard let binding = boundSections[id] else { throw StreamError.unknownSectionID(offset: at, sectionID: id) }
            return SectionHeader(kind: kind, sectionID: id, binding: binding)
        }
        let idstr = try readCountedString("the section idstr")
        let instance = try readBE32("the instance id")
        let version = try readBE32("the version id")
        let binding = SectionBinding(idstr: idstr, instanceID: instance, versionID: version)
        boundSections[id] = binding
        return SectionHeader(kind: kind, sectionID: id, binding: binding)
    }

    /// Reads a section footer: 0x7e and the same section id as the header.
    public func readFooter(sectionID: UInt32) throws {
        let at = offset
        let marker = try readU8("the section footer (0x7e)")
        guard marker == RecordType.sectionFooter.rawValue else {
            throw StreamError.badFooter(offset: at, sectionID: sectionID, found: "byte 0x\(String(marker, radix: 16))")
        }
        let id = try readBE32("the footer's section id")
        guard id == sectionID else {
            throw StreamError.badFooter(offset: at, sectionID: sectionID, found: "section id \(id)")
        }
    }

    /// After EOF: the VMDESCRIPTION trailer's JSON bytes, or nil when the input ends instead.
    public func readVMDescription(limit: Int = SavevmFormat.maxVMDescriptionLength) throws -> [UInt8]? {
        guard let byte = try peekU8() else { return nil }
        let at = offset
        guard byte == RecordType.vmDescription.rawValue else {
            throw StreamError.unexpectedRecord(offset: at, found: describe(byte), expected: "the VMDESCRIPTION trailer (0x06) or the end")
        }
        _ = try readU8()
        let len = try readLength("the VMDESCRIPTION length", field: "VMDESCRIPTION", limit: limit)
        return try readBytes(Int(len), "the VMDESCRIPTION JSON")
    }

    /// A be32 length or count, refused (``StreamError/lengthTooLarge``) above `limit`.
    func readLength(_ what: @autoclosure () -> String, field: String, limit: some BinaryInteger) throws -> UInt32 {
        let at = offset
        let value = try readBE32(what())
        let bound = UInt64(clamping: limit)
        guard UInt64(value) <= bound else {
            throw StreamError.lengthTooLarge(offset: at, field: field, length: UInt64(value), limit: bound)
        }
        return value
    }

    func describe(_ byte: UInt8) -> String {
        if let t = RecordType(rawValue: byte) { return "\(t) (0x\(String(byte, radix: 16)))" }
        return "byte 0x\(String(byte, radix: 16))"
    }
}

extension StreamWriter {
    /// Magic and version 3.
    public func writeFileHeader() throws {
        try writeBE32(SavevmFormat.magic)
        try writeBE32(SavevmFormat.version)
    }

    /// The configuration section with the subsections that are set.
    public func writeConfiguration(_ config: MachineConfiguration) throws {
        try writeU8(RecordType.configuration.rawValue)
        let name = Array(config.machineType.utf8)
        try writeBE32(UInt32(name.count))
        try writeBytes(name)
        if let bits = config.targetPageBits {
            try writeSubsectionHeader(MachineConfiguration.pageBitsName)
            try writeBE32(bits)
        }
        if let caps = config.capabilities {
            try writeSubsectionHeader(MachineConfiguration.capabilitiesName)
            try writeBE32(UInt32(caps.count))
            for c in caps { try writeCountedString(c) }
        }
        if let uuid = config.uuid {
            guard uuid.count == 16 else {
                throw StreamError.invalidField(offset: bytesWritten, field: "VM uuid", reason: "\(uuid.count) bytes, expected 16")
            }
            try writeSubsectionHeader(MachineConfiguration.uuidName)
            try writeBytes(uuid)
        }
    }

    private func writeSubsectionHeader(_ name: String) throws {
        try writeU8(RecordType.subsection.rawValue)
        try writeCountedString(name)
        try writeBE32(1)
    }

    /// A START/FULL header (with idstr, instance, version) or a PART/END header (id only).
    public func writeSectionHeader(_ header: SectionHeader) throws {
        try writeU8(header.kind.rawValue)
        try writeBE32(header.sectionID)
        if header.kind.carriesIdentity {
            try writeCountedString(header.binding.idstr)
            try writeBE32(header.binding.instanceID)
            try writeBE32(header.binding.versionID)
        }
    }

    /// The section footer: 0x7e and the section id.
    public func writeFooter(sectionID: UInt32) throws {
        try writeU8(RecordType.sectionFooter.rawValue)
        try writeBE32(sectionID)
    }

    public func writeEOF() throws {
        try writeU8(RecordType.eof.rawValue)
    }

    /// The VMDESCRIPTION trailer: 0x06, be32 length, JSON.
    public func writeVMDescription(_ json: [UInt8]) throws {
        try writeU8(RecordType.vmDescription.rawValue)
        try writeBE32(UInt32(json.count))
        try writeBytes(json)
    }
}
