/// The declarative match-table format a vendor module keeps beside its sources
/// (`devices.matchtable`), compiled into Swift at build time by the MatchTablePlugin.
///
/// One rule per line, fields as `key=value` separated by spaces; `#` starts a comment.
///
///     # ConnectX VFs on the mlx5 variant driver
///     vendor=15b3 device=101e driver=mlx5_vfio_pci
///     vendor=8086 class=020000/ffff00
///
/// Keys: `vendor`, `device`, `subvendor`, `subdevice` (4 hex digits, optional `0x`),
/// `class` (6 hex digits, optionally `/MASK` of 6 hex digits), `driver` (a kernel driver name:
/// letters, digits, `_` and `-`). Each key at most once per line; a line must name at least
/// one key.
public enum PCIMatchTableFile {
    /// Why a table was refused: the line (1-based) and the reason.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var reason: String

        public init(line: Int, reason: String) { (self.line, self.reason) = (line, reason) }

        public var description: String { "line \(line): \(reason)" }
    }

    /// The longest table we accept, in bytes and in lines: tables are small, input is bounded.
    public static let maxBytes = 1 << 20
    public static let maxLineLength = 1024

    /// Parses a whole table.
    public static func parse(_ text: String) throws(ParseError) -> [PCIMatchRule] {
        guard text.utf8.count <= maxBytes else {
            throw ParseError(line: 1, reason: "table is \(text.utf8.count) bytes; the limit is \(maxBytes)")
        }
        var rules: [PCIMatchRule] = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            guard rawLine.utf8.count <= maxLineLength else {
                throw ParseError(line: lineNumber, reason: "line is longer than \(maxLineLength) bytes")
            }
            let content = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            rules.append(try parseRule(fields, line: lineNumber))
        }
        return rules
    }

    private static func parseRule(_ fields: [Substring], line: Int) throws(ParseError) -> PCIMatchRule {
        var rule = PCIMatchRule()
        var seen: Set<Substring> = []
        for field in fields {
            let parts = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ParseError(line: line, reason: "\"\(field)\" is not key=value")
            }
            let (key, value) = (parts[0], parts[1])
            guard seen.insert(key).inserted else {
                throw ParseError(line: line, reason: "\(key) is given twice")
            }
            switch key {
            case "vendor": rule.vendorID = try hex16(value, key, line)
            case "device": rule.deviceID = try hex16(value, key, line)
            case "subvendor": rule.subsystemVendorID = try hex16(value, key, line)
            case "subdevice": rule.subsystemDeviceID = try hex16(value, key, line)
            case "class":
                let pieces = value.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
                rule.classCode = try hex24(pieces[0], "class", line)
                if pieces.count == 2 { rule.classMask = try hex24(pieces[1], "class mask", line) }
                if let c = rule.classCode, c & ~rule.classMask != 0 {
                    throw ParseError(line: line, reason: "class \(pieces[0]) has bits outside its mask")
                }
            case "driver":
                guard !value.isEmpty, value.utf8.count <= 64,
                    value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
                else {
                    throw ParseError(
                        line: line, reason: "driver \"\(value)\" is not a kernel driver name (letters, digits, _ and -, at most 64)")
                }
                rule.driver = String(value)
            default:
                throw ParseError(
                    line: line, reason: "unknown key \"\(key)\" (expected vendor, device, subvendor, subdevice, class or driver)")
            }
        }
        return rule
    }

    private static func hexDigits(_ value: Substring) -> Substring {
        value.hasPrefix("0x") || value.hasPrefix("0X") ? value.dropFirst(2) : value
    }

    private static func hex16(_ value: Substring, _ key: Substring, _ line: Int) throws(ParseError) -> UInt16 {
        let digits = hexDigits(value)
        guard digits.count == 4, let v = UInt16(digits, radix: 16) else {
            throw ParseError(line: line, reason: "\(key) \"\(value)\" is not 4 hex digits")
        }
        return v
    }

    private static func hex24(_ value: Substring, _ what: String, _ line: Int) throws(ParseError) -> UInt32 {
        let digits = hexDigits(value)
        guard digits.count == 6, let v = UInt32(digits, radix: 16) else {
            throw ParseError(line: line, reason: "\(what) \"\(value)\" is not 6 hex digits")
        }
        return v
    }

    /// Swift source declaring `rules` as a constant, for the build-tool plugin.
    public static func swiftSource(for rules: [PCIMatchRule], typeName: String, sourceName: String) -> String {
        func hex<T: BinaryInteger>(_ v: T?) -> String { v.map { "0x" + String($0, radix: 16) } ?? "nil" }
        var out = "// Generated by MatchTablePlugin from \(sourceName). Do not edit.\n"
        out += "import DeviceMatch\n\n"
        out += "enum \(typeName) {\n    static let rules: [PCIMatchRule] = [\n"
        for r in rules {
            let driver = r.driver.map { "\"\($0)\"" } ?? "nil"
            out += "        PCIMatchRule(vendorID: \(hex(r.vendorID)), deviceID: \(hex(r.deviceID)), "
            out += "subsystemVendorID: \(hex(r.subsystemVendorID)), subsystemDeviceID: \(hex(r.subsystemDeviceID)), "
            out += "classCode: \(hex(r.classCode)), classMask: \(hex(r.classMask)), driver: \(driver)),\n"
        }
        out += "    ]\n}\n"
        return out
    }
}
