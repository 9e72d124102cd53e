import MigrationStream

/// A JSON value with ordered object keys, written without Foundation: what the command-line
/// tools print with `--json`.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func optional(_ text: String?) -> JSONValue { text.map { .string($0) } ?? .null }
    public static func optional(_ number: Double?) -> JSONValue { number.map { .double($0) } ?? .null }
    public static func optional(_ number: Int?) -> JSONValue { number.map { .int($0) } ?? .null }
    public static func int(_ number: UInt64) -> JSONValue { .int(Int(clamping: number)) }
    public static func strings(_ items: [String]) -> JSONValue { .array(items.map { .string($0) }) }

    /// Pretty-printed with two-space indentation.
    public var text: String {
        var out = ""
        write(into: &out, indent: 0)
        return out
    }

    /// Appends the pretty-printed value to `out`, nested `indent` spaces deep.
    public func write(into out: inout String, indent: Int = 0) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let n): out += String(n)
        case .double(let d):
            // Three decimals are enough for milliseconds; JSON has no NaN or infinity.
            out += d.isFinite ? trimmed(fixedDecimal(d, digits: 3)) : "null"
        case .string(let s): JSONValue.quote(s, into: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "[\n"
            for (i, item) in items.enumerated() {
                out += String(repeating: " ", count: indent + 2)
                item.write(into: &out, indent: indent + 2)
                out += i == items.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "]"
        case .object(let members):
            if members.isEmpty { out += "{}"; return }
            out += "{\n"
            for (i, (key, value)) in members.enumerated() {
                out += String(repeating: " ", count: indent + 2)
                JSONValue.quote(key, into: &out)
                out += ": "
                value.write(into: &out, indent: indent + 2)
                out += i == members.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        }
    }

    private func trimmed(_ number: String) -> String {
        guard number.contains(".") else { return number }
        var s = number
        while s.last == "0" { s.removeLast() }
        if s.last == "." { s.removeLast() }
        return s
    }

    private static func quote(_ s: String, into out: inout String) {
        out += jsonString(s)
    }
}
