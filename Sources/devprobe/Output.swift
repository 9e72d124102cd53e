import CLISupport

#if canImport(Glibc)
import Glibc
#endif

/// Buffered writes to stdout and unbuffered ones to stderr, without Foundation or C's
/// global FILE pointers (which Swift 6 does not consider concurrency-safe).
struct Output {
    private var buffer: [UInt8] = []

    mutating func line(_ text: String = "") {
        write(text)
        endLine()
    }

    /// Appends a JSON array of `items`, pretty-printed, and ends the line. Each item is made
    /// only when it is written, so the whole document never exists as values at once.
    mutating func jsonArrayLine(_ items: some Sequence<JSONValue>) {
        // Written out every 64 KiB, as lines are: the buffer stays small.
        JSONValue.writeArray(items, into: &buffer) { bytes in
            if bytes.count >= 1 << 16 {
                Output.write(bytes, to: 1)
                bytes.removeAll(keepingCapacity: true)
            }
        }
        endLine()
    }

    /// Appends `text` without ending the line.
    mutating func write(_ text: String) {
        // One copy of the contiguous UTF-8, not a walk of the UTF8View.
        var text = text
        text.withUTF8 { buffer.append(contentsOf: $0) }
    }

    /// Appends `value` as lower-case hex, zero-padded to `width` digits (at most 16).
    mutating func hex<T: FixedWidthInteger & UnsignedInteger>(_ value: T, _ width: Int) {
        var digits = 1
        while digits < 16, UInt64(value) >> (4 * UInt64(digits)) != 0 { digits += 1 }
        for shift in stride(from: 4 * (max(digits, width) - 1), through: 0, by: -4) {
            let nibble = UInt8(truncatingIfNeeded: UInt64(value) >> UInt64(shift) & 0xf)
            buffer.append(nibble < 10 ? 0x30 + nibble : 0x61 - 10 + nibble)
        }
    }

    /// Appends `value` in decimal.
    mutating func decimal(_ value: Int) {
        write(String(value))
    }

    /// Ends the line, flushing every 64 KiB.
    mutating func endLine() {
        buffer.append(0x0a)
        if buffer.count >= 1 << 16 { flush() }
    }

    mutating func flush() {
        Output.write(buffer, to: 1)
        buffer.removeAll(keepingCapacity: true)
    }

    static func error(_ text: String) {
        write(Array((text + "\n").utf8), to: 2)
    }

    private static func write(_ bytes: [UInt8], to fd: Int32) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }
}
