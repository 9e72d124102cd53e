/// Reads and checks one device's sysfs attributes, collecting what is wrong as text a person can
/// act on. libpci reads ids with `strtol(…, 0)` and silently misreads values the kernel would
/// never write (no `0x`, garbage) and ignores broken links; this reader notices them.
struct DeviceAttributeReader {
    let dir: SysfsDirectory
    private(set) var problems: [String] = []

    init(dir: SysfsDirectory) {
        self.dir = dir
    }

    /// The attributes libpci will read, checked before it reads them.
    struct IdentityCheck {
        var request = LibPCIAccess.Request()
        /// Attributes present but not in the kernel's format: (name, raw text).
        var malformed: [(name: String, text: String)] = []
        /// The low byte of `class` (programming interface) when `class` is well formed.
        var progIF: UInt8?
    }

    /// Checks `vendor`, `device` and `class` (mandatory: libpci cannot do without them) and the
    /// optional attributes libpci would otherwise look for in config space. Nil when the device
    /// cannot be identified; ``problems`` says why.
    mutating func checkIdentityAttributes() -> IdentityCheck? {
        var check = IdentityCheck()
        var identified = true
        for (name, digits) in [("vendor", 4), ("device", 4), ("class", 6)] {
            switch dir.read(name) {
            case .missing:
                problems.append("no \(name) attribute")
                identified = false
            case .unreadable(let why):
                problems.append("\(name) \(why)")
                identified = false
            case .value(let text):
                if let value = kernelHex(text, maxDigits: digits) {
                    if name == "class" { check.progIF = UInt8(truncatingIfNeeded: value) }
                } else {
                    check.malformed.append((name, text))
                }
            }
        }
        guard identified else { return nil }
        // Without these attributes libpci falls back to config space (0xff when it is missing).
        let subsystem = [("subsystem_vendor", dir.read("subsystem_vendor")), ("subsystem_device", dir.read("subsystem_device"))]
        var bothPresent = true
        for (name, attribute) in subsystem {
            switch attribute {
            case .missing: bothPresent = false
            case .unreadable(let why):
                problems.append("\(name) \(why)")
                bothPresent = false
            case .value(let text):
                if kernelHex(text, maxDigits: 4) == nil { check.malformed.append((name, text)) }
            }
        }
        check.request.subsystem = bothPresent
        switch dir.read("revision") {
        case .missing: break
        case .unreadable(let why): problems.append("revision \(why)")
        case .value(let text):
            check.request.revision = true
            if kernelHex(text, maxDigits: 2) == nil { check.malformed.append(("revision", text)) }
        }
        return check
    }

    /// Records each malformed attribute with the value libpci made of it.
    mutating func reportMalformedIDs(_ check: IdentityCheck, as fields: LibPCIAccess.Fields) {
        for (name, text) in check.malformed {
            let read: String
            switch name {
            case "vendor": read = hexString(fields.vendorID, width: 4)
            case "device": read = hexString(fields.deviceID, width: 4)
            case "class": read = hexString(fields.classCode >> 8, width: 4) + " (class and subclass)"
            case "subsystem_vendor": read = fields.subsystemVendorID.map { hexString($0, width: 4) } ?? "nothing"
            case "subsystem_device": read = fields.subsystemDeviceID.map { hexString($0, width: 4) } ?? "nothing"
            default: read = fields.revision.map { hexString($0, width: 2) } ?? "nothing"
            }
            problems.append("\(name) holds \"\(printable(text))\", not 0x-prefixed hex as the kernel writes it; "
                + "libpci (and lspci) read it as \(read), so the ids shown are not to be trusted")
        }
    }

    /// The IOMMU group number from libpci's `iommu_group` property, or nil with the reason noted
    /// when the link is broken or does not name a number.
    mutating func iommuGroup(libpciName: String?) -> Int? {
        if let name = libpciName {
            if !name.isEmpty, name.count <= 9, name.allSatisfy({ $0.isASCII && $0.isNumber }), let group = Int(name) {
                return group
            }
            problems.append("the iommu_group link names \"\(printable(name))\", not a group number")
            return nil
        }
        checkLink("iommu_group")
        return nil
    }

    /// Notes a `driver` entry libpci could not resolve (the device then shows as unbound).
    mutating func checkDriverLink(libpciDriver: String?) {
        if libpciDriver == nil { checkLink("driver") }
    }

    /// Notes why libpci found nothing behind an entry that is there.
    private mutating func checkLink(_ name: String) {
        if let target = dir.linkTarget(name) {
            if target.hasPrefix("/") {
                problems.append("the \(name) link is absolute (\(printable(target))); the kernel writes relative links and libpci ignores absolute ones")
            } else {
                problems.append("the \(name) link points to \(printable(target)), which does not exist")
            }
        } else if dir.resolves(name) {
            problems.append("\(name) is not a symbolic link")
        }
    }

    /// `driver_override`, nil when unset (`(null)`).
    mutating func driverOverride() -> String? {
        switch dir.read("driver_override") {
        case .missing: return nil
        case .unreadable(let why):
            problems.append("driver_override \(why)")
            return nil
        case .value(let text):
            if text.isEmpty || text == "(null)" { return nil }
            if isDriverName(text) { return text }
            problems.append("driver_override holds \"\(printable(text))\", not a driver name")
            return nil
        }
    }

    /// `numa_node`, nil when absent or -1.
    mutating func numaNode() -> Int? {
        switch dir.read("numa_node") {
        case .missing: return nil
        case .unreadable(let why):
            problems.append("numa_node \(why)")
            return nil
        case .value(let text):
            guard let node = Int(text), node >= -1, node < 1 << 16 else {
                problems.append("numa_node holds \"\(printable(text))\", not a node number")
                return nil
            }
            return node >= 0 ? node : nil
        }
    }

    /// The physical function behind the `physfn` link of a virtual function.
    mutating func physicalFunction() -> PCIAddress? {
        guard let target = dir.linkTarget("physfn") else { return nil }
        return linkedAddress("physfn", target)
    }

    /// The virtual functions behind `virtfn0…virtfn<sriov_numvfs - 1>`.
    mutating func virtualFunctions() -> [PCIAddress] {
        let count: Int
        switch dir.read("sriov_numvfs") {
        case .missing: return []
        case .unreadable(let why):
            problems.append("sriov_numvfs \(why)")
            return []
        case .value(let text):
            guard let n = Int(text), (0...65535).contains(n) else {
                problems.append("sriov_numvfs holds \"\(printable(text))\", not a number of virtual functions")
                return []
            }
            count = n
        }
        var functions: [PCIAddress] = []
        for index in 0..<count {
            guard let target = dir.linkTarget("virtfn\(index)") else {
                problems.append("sriov_numvfs is \(count) but there is no virtfn\(index) link")
                break
            }
            if let address = linkedAddress("virtfn\(index)", target) { functions.append(address) }
        }
        return functions
    }

    /// The VFIO character device's name from `vfio-dev/vfioN`.
    func vfioCdevName() -> String? {
        dir.entries(of: "vfio-dev", limit: 16)?.sorted().first { name in
            name.hasPrefix("vfio") && name.count > 4 && name.dropFirst(4).allSatisfy { $0.isASCII && $0.isNumber }
        }
    }

    private mutating func linkedAddress(_ name: String, _ target: String) -> PCIAddress? {
        let last = target.split(separator: "/").last.map(String.init) ?? ""
        if let address = PCIAddress(last), address.description == last { return address }
        problems.append("the \(name) link points to \(printable(target)), not to a PCI device")
        return nil
    }
}

/// The value of an attribute written the kernel's way: `0x` and 1…`maxDigits` hex digits.
func kernelHex(_ text: String, maxDigits: Int) -> UInt32? {
    guard text.hasPrefix("0x") else { return nil }
    let digits = text.dropFirst(2)
    guard !digits.isEmpty, digits.count <= maxDigits, digits.allSatisfy(\.isHexDigit) else { return nil }
    return UInt32(digits, radix: 16)
}

/// Whether `text` can be a kernel driver name (letters, digits, `_` and `-`).
func isDriverName(_ text: String) -> Bool {
    !text.isEmpty && text.count <= 64
        && text.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-") }
}
