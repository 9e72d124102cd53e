import CLISupport

/// Sizes and durations as a person writes them on a command line ("256MiB", "300ms") and as
/// the demo and benchmarks print them.
public enum Units {
    /// Parses a byte count: a whole number with an optional suffix B, KiB, MiB, GiB, TiB (powers
    /// of 1024; K, M, G, T mean the same) or KB, MB, GB, TB (powers of 1000). Case-insensitive.
    /// Nil when the text is not such a number or the value does not fit in 64 bits.
    public static func parseBytes(_ text: String) -> UInt64? {
        let (digits, suffix) = split(text)
        guard !digits.isEmpty, let value = UInt64(digits) else { return nil }
        let multiplier: UInt64
        switch suffix.lowercased() {
        case "", "b": multiplier = 1
        case "k", "kib": multiplier = 1 << 10
        case "m", "mib": multiplier = 1 << 20
        case "g", "gib": multiplier = 1 << 30
        case "t", "tib": multiplier = 1 << 40
        case "kb": multiplier = 1_000
        case "mb": multiplier = 1_000_000
        case "gb": multiplier = 1_000_000_000
        case "tb": multiplier = 1_000_000_000_000
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// Parses a duration: a whole or decimal number with the suffix us, ms, s or min ("300ms",
    /// "1.5s"). A bare number is refused: the unit is never guessed. Nil when malformed,
    /// negative or longer than a day.
    public static func parseDuration(_ text: String) -> Duration? {
        let (number, suffix) = split(text, allowingPoint: true)
        guard !number.isEmpty, number.first != ".", number.last != ".", let value = Double(number) else { return nil }
        let seconds: Double
        switch suffix.lowercased() {
        case "us", "µs": seconds = value / 1_000_000
        case "ms": seconds = value / 1_000
        case "s": seconds = value
        case "min": seconds = value * 60
        default: return nil
        }
        guard seconds.isFinite, seconds >= 0, seconds <= 86_400 else { return nil }
        return .microseconds(Int64((seconds * 1_000_000).rounded()))
    }

    private static func split(_ text: String, allowingPoint: Bool = false) -> (Substring, Substring) {
        let trimmed = Substring(text)
        let end = trimmed.firstIndex { !($0.isASCII && ($0.isNumber || (allowingPoint && $0 == "."))) } ?? trimmed.endIndex
        return (trimmed[..<end], trimmed[end...])
    }

    /// "64.0 MiB", "512 B", "1.50 GiB".
    public static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(count) B" }
        return fixed(value, digits: value < 10 ? 2 : 1) + " " + units[unit]
    }

    /// A bandwidth in bytes per second: "950 MB/s", "1.20 GB/s" (powers of 1000, as network
    /// rates are written).
    public static func rate(_ bytesPerSecond: Double) -> String {
        guard bytesPerSecond.isFinite, bytesPerSecond > 0 else { return "0 B/s" }
        let units = ["B/s", "kB/s", "MB/s", "GB/s"]
        var value = bytesPerSecond
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return fixed(value, digits: value < 10 ? 2 : 0) + " " + units[unit]
    }

    /// A duration in milliseconds as a number.
    public static func milliseconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) * 1_000 + Double(attoseconds) / 1e15
    }

    /// "212 ms", "1.9 ms", "3.20 s".
    public static func duration(_ duration: Duration) -> String {
        let ms = milliseconds(duration)
        if ms >= 10_000 { return fixed(ms / 1000, digits: 1) + " s" }
        if ms >= 1_000 { return fixed(ms / 1000, digits: 2) + " s" }
        if ms >= 10 { return fixed(ms, digits: 0) + " ms" }
        return fixed(ms, digits: 1) + " ms"
    }

    /// `value` with `digits` decimals, without Foundation's locale-dependent formatting.
    public static func fixed(_ value: Double, digits: Int) -> String { fixedDecimal(value, digits: digits) }
}
