#if canImport(Glibc)
import Glibc
#endif

/// One directory of a sysfs tree, read through a directory descriptor with bounded, non-blocking
/// reads: trees may come from anywhere (`--sysfs-root`), so nothing read from them is trusted.
final class SysfsDirectory {
    /// The largest attribute devprobe reads; sysfs attributes are at most one page.
    static let attributeLimit = 4096

    /// What reading one attribute gave.
    enum Attribute: Equatable {
        case missing
        case value(String)
        /// Present but not usable; the text says why (`is a FIFO, not a regular file`).
        case unreadable(String)
    }

    let path: String
    private let fd: Int32

    /// Opens `path` as a directory (following a final symbolic link, as the kernel's
    /// `bus/pci/devices/*` entries are links); nil with the errno when it cannot.
    init(path: String) throws(SysfsOpenError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SysfsOpenError(errno: errno) }
        self.path = path
        self.fd = fd
    }

    private init(fd: Int32, path: String) { (self.fd, self.path) = (fd, path) }

    /// Opens the entry `name` of this directory as a directory, following a final symbolic link:
    /// one short path walk instead of the whole path again.
    func subdirectory(_ name: String) throws(SysfsOpenError) -> SysfsDirectory {
        let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard sub >= 0 else { throw SysfsOpenError(errno: errno) }
        return SysfsDirectory(fd: sub, path: path + "/" + name)
    }

    /// Whether the entry `name` itself exists (a broken symbolic link does).
    func hasEntry(_ name: String) -> Bool {
        var st = stat()
        return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// This directory's entries, dot entries excluded; nil when it cannot be listed.
    func entries(limit: Int) -> [String]? {
        let copy = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard copy >= 0 else { return nil }
        return SysfsDirectory.list(fd: copy, limit: limit)
    }

    deinit { close(fd) }

    /// Reads an attribute file: at most ``attributeLimit`` bytes, never through a symbolic link,
    /// never blocking (a FIFO reads as empty). Trailing newlines and spaces are removed.
    func read(_ name: String) -> Attribute {
        let afd = openat(fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard afd >= 0 else {
            let err = errno
            if err == ENOENT { return .missing }
            if err == ELOOP { return .unreadable("is a symbolic link, not a regular file") }
            return .unreadable(errnoText(err))
        }
        defer { close(afd) }
        // One read of up to limit + 1 bytes: sysfs hands out an attribute whole, and a short
        // read of a regular file means its end. The buffer is on the stack, not zeroed.
        let limit = Self.attributeLimit
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: limit + 1) { buf -> Attribute in
            var n: Int
            repeat { n = Glibc.read(afd, buf.baseAddress, limit + 1) } while n < 0 && errno == EINTR
            if n < 0 { return .unreadable(errnoText(errno)) }
            if n > limit { return .unreadable("is longer than \(limit) bytes") }
            var end = n
            while end > 0, buf[end - 1] == 0x0a || buf[end - 1] == 0x20 || buf[end - 1] == 0 { end -= 1 }
            return .value(String(decoding: UnsafeBufferPointer(rebasing: buf[0..<end]), as: UTF8.self))
        }
    }

    /// The target of a symbolic link in this directory, nil when there is no such link.
    func linkTarget(_ name: String) -> String? {
        // On the stack, not zeroed: readlinkat says how many bytes it wrote.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buf -> String? in
            guard let base = buf.baseAddress else { return nil }
            let n = base.withMemoryRebound(to: CChar.self, capacity: buf.count) { readlinkat(fd, name, $0, buf.count - 1) }
            guard n > 0 else { return nil }
            return String(decoding: UnsafeBufferPointer(rebasing: buf[0..<n]), as: UTF8.self)
        }
    }

    /// Whether the entry `name` is a regular file (not following a symbolic link).
    func isRegularFile(_ name: String) -> Bool {
        var st = stat()
        return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFREG
    }

    /// Whether `name` exists, following symbolic links (a broken link does not exist).
    func resolves(_ name: String) -> Bool {
        faccessat(fd, name, F_OK, 0) == 0
    }

    /// The entries of a subdirectory, dot entries excluded; nil when it cannot be opened.
    func entries(of name: String, limit: Int = 4096) -> [String]? {
        let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        guard sub >= 0 else { return nil }
        return SysfsDirectory.list(fd: sub, limit: limit)
    }

    /// Lists an open directory descriptor (which it takes over and closes).
    static func list(fd: Int32, limit: Int) -> [String]? {
        guard let dir = fdopendir(fd) else {
            close(fd)
            return nil
        }
        defer { closedir(dir) }
        var names: [String] = []
        while names.count < limit, let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            names.append(name)
        }
        return names
    }
}

/// An errno from opening a sysfs directory.
struct SysfsOpenError: Error {
    var errno: Int32
    var text: String { errnoText(errno) }
}

/// `strerror` text for an errno.
func errnoText(_ err: Int32) -> String {
    guard let s = strerror(err) else { return "errno \(err)" }
    return String(cString: s)
}

/// Text from an untrusted file made safe to print: control characters become `\u{..}`-style
/// escapes, and the result is cut at `limit` characters.
func printable(_ text: String, limit: Int = 64) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        if out.count >= limit {
            out += "…"
            break
        }
        if scalar.value < 0x20 || scalar.value == 0x7f {
            out += "\\x" + hexString(scalar.value, width: 2)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
