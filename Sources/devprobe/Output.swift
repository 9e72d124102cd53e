#if canImport(Glibc)
import Glibc
#endif

/// Buffered writes to stdout and unbuffered ones to stderr, without Foundation or C's
/// global FILE pointers (which Swift 6 does not consider concurrency-safe).
struct Output {
    private var buffer: [UInt8] = []

    mutating func line(_ text: String = "") {
        buffer.append(contentsOf: text.utf8)
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
