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
        var bytes: [UInt8] = []
        write(into: &bytes, indent: indent)
        out += String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the pretty-printed value to `out` as UTF-8, nested `indent` spaces deep: the same
    /// text as the `String` variant, without building a string (devprobe `--json` writes one
    /// object per PCI device).
    public func write(into out: inout [UInt8], indent: Int = 0) {
        switch self {
        case .null: Self.append("null", to: &out)
        case .bool(let b): Self.append(b ? "true" : "false", to: &out)
        case .int(let n): out += String(n).utf8
        case .double(let d):
            // Three decimals are enough for milliseconds; JSON has no NaN or infinity.
            out += (d.isFinite ? trimmed(fixedDecimal(d, digits: 3)) : "null").utf8
        case .string(let s): appendJSONString(s, to: &out)
        case .array(let items):
            Self.writeArray(items, into: &out, indent: indent)
        case .object(let members):
            if members.isEmpty {
                Self.append("{}", to: &out)
                return
            }
            Self.append("{\n", to: &out)
            for (i, (key, value)) in members.enumerated() {
                Self.spaces(indent + 2, into: &out)
                appendJSONString(key, to: &out)
                Self.append(": ", to: &out)
                value.write(into: &out, indent: indent + 2)
                Self.append(i == members.count - 1 ? "\n" : ",\n", to: &out)
            }
            Self.spaces(indent, into: &out)
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Appends `.array(items)` as ``write(into:indent:)`` would, taking the items one at a time:
    /// a caller can make each item only when it is written (`items.lazy.map { … }`) and hand on
    /// what is written so far after each one (`afterEach`, e.g. to write it out and empty `out`).
    public static func writeArray(
        _ items: some Sequence<JSONValue>, into out: inout [UInt8], indent: Int = 0,
        afterEach: (inout [UInt8]) -> Void = { _ in }
    ) {
        var first = true
        for item in items {
            append(first ? "[\n" : ",\n", to: &out)
            first = false
            spaces(indent + 2, into: &out)
            item.write(into: &out, indent: indent + 2)
            afterEach(&out)
        }
        if first {
            append("[]", to: &out)
            return
        }
        append("\n", to: &out)
        spaces(indent, into: &out)
        out.append(UInt8(ascii: "]"))
    }

    /// Appends a literal's bytes with one copy (no walk of a `String.UTF8View`).
    private static func append(_ literal: StaticString, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    private static func spaces(_ count: Int, into out: inout [UInt8]) {
        let blanks: StaticString = "                                "
        var left = count
        while left > 0 {
            let n = min(left, blanks.utf8CodeUnitCount)
            out.append(contentsOf: UnsafeBufferPointer(start: blanks.utf8Start, count: n))
            left -= n
        }
    }

    private func trimmed(_ number: String) -> String {
        guard number.contains(".") else { return number }
        var s = number
        while s.last == "0" { s.removeLast() }
        if s.last == "." { s.removeLast() }
        return s
    }
}
