/// What `swift package scaffold-handler` was asked to generate, validated.
///
/// Built from the command line by ``parse(_:)``; every field has been checked, so the
/// templates can use it as it is.
public struct ScaffoldRequest: Sendable, Equatable {
    /// The vendor's name as a Swift type prefix: `Acme` gives `AcmeHandler`, `AcmeModule`, `AcmeTuning`.
    public var name: String
    /// The PCI vendor id the module serves.
    public var vendorID: UInt16
    /// The PCI device ids it serves, one match rule each; empty: every device of the vendor.
    public var deviceIDs: [UInt16]
    /// The kernel (variant) driver the devices are bound to, or nil to match any driver.
    public var driver: String?
    /// Whether to insert the new targets into Package.swift (above the scaffold-handler markers).
    public var editManifest: Bool
    /// The package identity of Switchover when the new module lives in another package that
    /// depends on it (`.product(name:package:)` dependencies); nil inside Switchover itself.
    public var switchoverPackage: String?
    /// Target names the package already has (given by the plugin); the new ones must not be among them.
    public var existingTargets: Set<String>

    public init(
        name: String, vendorID: UInt16, deviceIDs: [UInt16] = [], driver: String? = nil,
        editManifest: Bool = false, switchoverPackage: String? = nil, existingTargets: Set<String> = []
    ) {
        self.name = name
        self.vendorID = vendorID
        self.deviceIDs = deviceIDs
        self.driver = driver
        self.editManifest = editManifest
        self.switchoverPackage = switchoverPackage
        self.existingTargets = existingTargets
    }

    /// The module's target: `AcmeHandler`.
    public var targetName: String { name + "Handler" }
    /// Its test target: `AcmeHandlerTests`.
    public var testTargetName: String { name + "HandlerTests" }
    /// The name the module reports in errors, statistics and devprobe: `acme`.
    public var moduleName: String { name.lowercased() }

    /// The usage text of the command (the plugin's `--help`).
    public static let usage = """
        USAGE: swift package --allow-writing-to-package-directory scaffold-handler \\
                 --name <Name> --vendor-id <hex> [--device-id <hex> ...] [--driver <driver>] [--edit-manifest]

        Adds a vendor module to this package: Sources/<Name>Handler (a handler built on the generic
        VFIO-PCI handler, with a tuning and a devices.matchtable), Tests/<Name>HandlerTests (the
        MigrationTestKit conformance suite), and the Package.swift lines for both.

        OPTIONS:
          --name <Name>          A Swift type name (Acme): the targets are <Name>Handler and <Name>HandlerTests.
          --vendor-id <hex>      The PCI vendor id (0x1234).
          --device-id <hex>      A PCI device id the module serves; repeat for several. None: every device of the vendor.
          --driver <driver>      The kernel variant driver the devices use (acme_vfio_pci). None: any driver.
          --edit-manifest        Insert the lines into Package.swift above its scaffold-handler marker
                                 comments instead of printing them.
          --help                 Show this text.

        Nothing that exists is overwritten: an existing target, folder or file makes the command fail
        before it writes anything.
        """

    /// Parses the tool's arguments (the plugin passes the user's, then its own
    /// `--switchover-package` and `--existing-target`). Returns nil for `--help`.
    public static func parse(_ arguments: [String]) throws(ScaffoldError) -> ScaffoldRequest? {
        var name: String?
        var vendor: String?
        var devices: [String] = []
        var driver: String?
        var edit = false
        var package: String?
        var existing: Set<String> = []

        var rest = arguments[...]
        while let argument = rest.popFirst() {
            // --key=value and --key value are both accepted.
            let (key, inlineValue): (String, String?) = {
                guard argument.hasPrefix("--"), let eq = argument.firstIndex(of: "=") else { return (argument, nil) }
                return (String(argument[..<eq]), String(argument[argument.index(after: eq)...]))
            }()
            func value() throws(ScaffoldError) -> String {
                if let inlineValue { return inlineValue }
                guard let next = rest.popFirst(), !next.hasPrefix("--") else {
                    throw ScaffoldError("\(key) needs a value")
                }
                return next
            }
            func once(_ current: String?) throws(ScaffoldError) -> String {
                guard current == nil else { throw ScaffoldError("\(key) is given twice") }
                return try value()
            }
            switch key {
            case "--help", "-h": return nil
            case "--name": name = try once(name)
            case "--vendor-id": vendor = try once(vendor)
            case "--device-id": devices += try value().split(separator: ",").map(String.init)
            case "--driver": driver = try once(driver)
            case "--edit-manifest":
                guard inlineValue == nil else { throw ScaffoldError("--edit-manifest takes no value") }
                edit = true
            case "--switchover-package": package = try once(package)
            case "--existing-target": existing.insert(try value())
            default: throw ScaffoldError("unknown argument \"\(argument)\" (see --help)")
            }
        }

        guard let name else { throw ScaffoldError("--name is required (e.g. --name Acme)") }
        guard let vendor else { throw ScaffoldError("--vendor-id is required (e.g. --vendor-id 0x1234)") }
        try validateName(name)
        let vendorID = try pciID(vendor, "--vendor-id")
        var deviceIDs: [UInt16] = []
        for device in devices {
            let id = try pciID(device, "--device-id")
            guard !deviceIDs.contains(id) else { throw ScaffoldError("--device-id \(hex(id)) is given twice") }
            deviceIDs.append(id)
        }
        if let driver { try validateDriver(driver) }
        return ScaffoldRequest(
            name: name, vendorID: vendorID, deviceIDs: deviceIDs, driver: driver,
            editManifest: edit, switchoverPackage: package, existingTargets: existing)
    }

    /// The longest `--name` accepted.
    public static let maxNameLength = 48

    static func validateName(_ name: String) throws(ScaffoldError) {
        guard let first = name.unicodeScalars.first, ("A"..."Z").contains(first),
            name.unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) })
        else {
            throw ScaffoldError(
                "--name \"\(name)\" is not a Swift type name: start with an uppercase letter, "
                    + "then letters and digits only (e.g. Acme)")
        }
        guard name.count <= maxNameLength else {
            throw ScaffoldError("--name \"\(name)\" is longer than \(maxNameLength) characters")
        }
        guard !name.hasSuffix("Handler") else {
            throw ScaffoldError(
                "--name \"\(name)\" ends with Handler; give the vendor's name only "
                    + "(\(name.dropLast("Handler".count)) gives \(name))")
        }
    }

    /// A 16-bit PCI id: 1 to 4 hex digits, with or without `0x`. 0xffff is what a config read
    /// returns when no device answers, so it is never an id.
    static func pciID(_ text: String, _ option: String) throws(ScaffoldError) -> UInt16 {
        let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? text.dropFirst(2) : text[...]
        guard (1...4).contains(digits.count), digits.allSatisfy(\.isHexDigit), let id = UInt16(digits, radix: 16) else {
            throw ScaffoldError("\(option) \"\(text)\" is not a 16-bit hex id (e.g. 0x1234)")
        }
        guard id != 0xffff else {
            throw ScaffoldError("\(option) 0xffff is not an id: it is what a PCI read returns when no device answers")
        }
        return id
    }

    /// A kernel driver name as sysfs shows it: letters, digits, `_` and `-`, at most 64 (the
    /// match-table format's rule).
    static func validateDriver(_ driver: String) throws(ScaffoldError) {
        guard !driver.isEmpty, driver.utf8.count <= 64,
            driver.unicodeScalars.allSatisfy({
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-")
            })
        else {
            throw ScaffoldError("--driver \"\(driver)\" is not a kernel driver name (letters, digits, _ and -, at most 64)")
        }
    }
}

/// Why the scaffold refused to run; the message is shown as it is.
public struct ScaffoldError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `0x1234`.
func hex(_ id: UInt16) -> String {
    let digits = String(id, radix: 16)
    return "0x" + String(repeating: "0", count: 4 - digits.count) + digits
}
