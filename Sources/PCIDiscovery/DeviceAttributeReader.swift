/// Reads and checks one device's sysfs attributes, collecting what is wrong as text a person can
/// act on. libpci reads ids with `strtol(…, 0)` and silently misreads values the kernel would
/// never write (no `0x`, garbage) and ignores broken links; this reader notices them.
///
/// Everything is read relative to the device's directory descriptor: one path walk per device
/// instead of one per attribute.
struct DeviceAttributeReader {
    let dir: SysfsDirectory
    private(set) var problems: [String] = []

    init(dir: SysfsDirectory) {
        self.dir = dir
    }

    /// The identity attributes as the kernel wrote them, checked before libpci reads the ids.
    struct Identity {
        /// Attributes present but not in the kernel's format: (name, raw text).
        var malformed: [(name: String, text: String)] = []
        /// The low byte of `class` (programming interface) when `class` is well formed.
        var progIF: UInt8 = 0
        var vendorID: UInt16 = 0
        var deviceID: UInt16 = 0
        /// Base class and subclass, when `class` is well formed.
        var deviceClass: UInt16 = 0
        var subsystemVendorID: UInt16?
        var subsystemDeviceID: UInt16?
        var revision: UInt8?

        /// The ids when every identity attribute is well formed: exactly what libpci's
        /// `pci_fill_info(IDENT | CLASS)` reads from them (`strtol` of `0x` hex; class >> 8), so
        /// libpci is only asked when one is not (``LibPCIAccess/fields(of:)``).
        var fields: LibPCIAccess.Fields? {
            malformed.isEmpty ? LibPCIAccess.Fields(vendorID: vendorID, deviceID: deviceID, deviceClass: deviceClass) : nil
        }
    }

    /// Checks `vendor`, `device` and `class` (mandatory: libpci reads them, with an unchecked
    /// `strtol`) and reads the optional `subsystem_vendor`, `subsystem_device` and `revision`.
    /// Nil when the device cannot be identified; ``problems`` says why. When one of the three
    /// is malformed, all three must be regular files: libpci opens them without O_NONBLOCK.
    mutating func identity() -> Identity? {
        var identity = Identity()
        var identified = true
        for (name, digits) in [("vendor", 4), ("device", 4), ("class", 6)] {
            switch dir.read(name) {
            case .missing:
                problems.append("no \(name) attribute")
                identified = false
            case .unreadable(let why):
                // A directory or a device node reads as an errno: say what it is instead.
                let regular = why.hasPrefix("is a symbolic link") || dir.isRegularFile(name)
                problems.append("\(name) \(regular ? why : "is not a regular file")")
                identified = false
            case .value(let text):
                guard let value = kernelHex(text, maxDigits: digits) else {
                    identity.malformed.append((name, text))
                    continue
                }
                switch name {
                case "vendor": identity.vendorID = UInt16(truncatingIfNeeded: value)
                case "device": identity.deviceID = UInt16(truncatingIfNeeded: value)
                default:
                    identity.deviceClass = UInt16(truncatingIfNeeded: value >> 8)
                    identity.progIF = UInt8(truncatingIfNeeded: value)
                }
            }
        }
        if identified, !identity.malformed.isEmpty {
            // A FIFO reads as empty here (O_NONBLOCK) but would block libpci's read.
            for name in ["vendor", "device", "class"] where !dir.isRegularFile(name) {
                problems.append("\(name) is not a regular file")
                identified = false
            }
        }
        guard identified else { return nil }
        let subsystemVendor = optionalHex("subsystem_vendor", maxDigits: 4)
        let subsystemDevice = optionalHex("subsystem_device", maxDigits: 4)
        if let subsystemVendor, let subsystemDevice {
            identity.subsystemVendorID = UInt16(subsystemVendor)
            identity.subsystemDeviceID = UInt16(subsystemDevice)
        }
        identity.revision = optionalHex("revision", maxDigits: 2).map { UInt8($0) }
        return identity
    }

    /// An optional hex attribute; nil, with the reason noted, when it is malformed.
    private mutating func optionalHex(_ name: String, maxDigits: Int) -> UInt32? {
        attribute(name, expected: "not 0x-prefixed hex as the kernel writes it; ignored") {
            kernelHex($0, maxDigits: maxDigits)
        }
    }

    /// An optional attribute through `parse`: nil when absent, and nil with the reason noted when
    /// it is unreadable or `parse` refuses it (`expected` says what it should hold).
    private mutating func attribute<T>(_ name: String, expected: String, _ parse: (String) -> T?) -> T? {
        switch dir.read(name) {
        case .missing: return nil
        case .unreadable(let why):
            problems.append("\(name) \(why)")
            return nil
        case .value(let text):
            if let value = parse(text) { return value }
            problems.append("\(name) holds \"\(printable(text))\", \(expected)")
            return nil
        }
    }

    /// Records each malformed identity attribute with the value libpci made of it.
    mutating func reportMalformedIDs(_ identity: Identity, as fields: LibPCIAccess.Fields) {
        for (name, text) in identity.malformed {
            let read: String
            switch name {
            case "vendor": read = hexString(fields.vendorID, width: 4)
            case "device": read = hexString(fields.deviceID, width: 4)
            default: read = hexString(fields.deviceClass, width: 4) + " (class and subclass)"
            }
            problems.append(
                "\(name) holds \"\(printable(text))\", not 0x-prefixed hex as the kernel writes it; "
                    + "libpci (and lspci) read it as \(read), so the ids shown are not to be trusted")
        }
    }

    /// The IOMMU group number: the name the `iommu_group` link ends in, when the link resolves
    /// (what libpci's IOMMU_GROUP property gives, without its realpath walk); nil with the
    /// reason noted when the link is broken or does not name a number.
    mutating func iommuGroup() -> Int? {
        guard let target = dir.linkTarget("iommu_group"), dir.resolves("iommu_group"), !target.hasPrefix("/") else {
            checkLink("iommu_group")
            return nil
        }
        let name = lastComponent(target)
        if !name.isEmpty, name.count <= 9, name.allSatisfy({ $0.isASCII && $0.isNumber }), let group = Int(name) {
            return group
        }
        problems.append("the iommu_group link names \"\(printable(name))\", not a group number")
        return nil
    }

    /// The bound driver: the name the `driver` link ends in, when the link is relative and
    /// resolves (as libpci's DRIVER property, without its realpath walk).
    mutating func driver() -> String? {
        guard let target = dir.linkTarget("driver"), !target.hasPrefix("/"), dir.resolves("driver") else {
            checkLink("driver")
            return nil
        }
        let name = lastComponent(target)
        if isDriverName(name) { return name }
        problems.append("the driver link names \"\(printable(name))\", not a driver")
        return nil
    }

    /// Notes why an entry that is there gives nothing (libpci ignores such links too).
    private mutating func checkLink(_ name: String) {
        if let target = dir.linkTarget(name) {
            if target.hasPrefix("/") {
                problems.append(
                    "the \(name) link is absolute (\(printable(target))); the kernel writes relative links and libpci ignores absolute ones"
                )
            } else {
                problems.append("the \(name) link points to \(printable(target)), which does not exist")
            }
        } else if dir.resolves(name) {
            problems.append("\(name) is not a symbolic link")
        }
    }

    /// `driver_override`, nil when unset (`(null)`).
    mutating func driverOverride() -> String? {
        let value: String?? = attribute("driver_override", expected: "not a driver name") { text in
            if text.isEmpty || text == "(null)" { return .some(nil) }  // unset: no problem
            guard isDriverName(text) else { return nil }  // refused: a problem
            return .some(text)
        }
        return value ?? nil
    }

    /// `numa_node`, nil when absent or -1.
    mutating func numaNode() -> Int? {
        let value: Int?? = attribute("numa_node", expected: "not a node number") { text in
            guard let node = Int(text), node >= -1, node < 1 << 16 else { return nil }
            return .some(node >= 0 ? node : nil)
        }
        return value ?? nil
    }

    /// The physical function behind the `physfn` link of a virtual function.
    mutating func physicalFunction() -> PCIAddress? {
        guard let target = dir.linkTarget("physfn") else { return nil }
        return linkedAddress("physfn", target)
    }

    /// The virtual functions behind `virtfn0…virtfn<sriov_numvfs - 1>`.
    mutating func virtualFunctions() -> [PCIAddress] {
        guard
            let count = attribute(
                "sriov_numvfs", expected: "not a number of virtual functions",
                {
                    Int($0).flatMap { (0...65535).contains($0) ? $0 : nil }
                })
        else { return [] }
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
        let last = lastComponent(target)
        if let address = PCIAddress(last), address.description == last { return address }
        problems.append("the \(name) link points to \(printable(target)), not to a PCI device")
        return nil
    }
}

/// The value of an attribute written the kernel's way: `0x` and 1…`maxDigits` hex digits.
func kernelHex(_ text: String, maxDigits: Int) -> UInt32? {
    // On the UTF-8 bytes: this runs several times per device.
    var bytes = text.utf8.makeIterator()
    guard bytes.next() == UInt8(ascii: "0"), bytes.next() == UInt8(ascii: "x") else { return nil }
    var value: UInt32 = 0
    var digits = 0
    while let b = bytes.next() {
        let digit: UInt8
        switch b {
        case 0x30...0x39: digit = b - 0x30
        case 0x61...0x66: digit = b - 0x61 + 10
        case 0x41...0x46: digit = b - 0x41 + 10
        default: return nil
        }
        digits += 1
        if digits > maxDigits { return nil }
        value = value << 4 | UInt32(digit)
    }
    return digits > 0 ? value : nil
}

/// Whether `text` can be a kernel driver name (ASCII letters, digits, `_` and `-`).
func isDriverName(_ text: String) -> Bool {
    let bytes = text.utf8
    return !bytes.isEmpty && bytes.count <= 64
        && bytes.allSatisfy { b in
            (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b == 0x5f || b == 0x2d
        }
}

/// The last path component of a link target (`../../bus/pci/drivers/vfio-pci` → `vfio-pci`).
func lastComponent(_ path: String) -> String {
    var bytes = Substring(path).utf8
    while bytes.last == UInt8(ascii: "/") { bytes = bytes.dropLast() }
    guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return String(Substring(bytes)) }
    return String(Substring(bytes[bytes.index(after: slash)...]))
}
