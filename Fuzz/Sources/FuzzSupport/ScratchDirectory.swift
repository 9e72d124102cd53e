#if canImport(Glibc)
import Glibc
#endif

/// A private directory for targets that must go through files (a stream file for `inspect`, a
/// sysfs tree): in /dev/shm when it exists, so each input costs no disk I/O. Removed at exit
/// only by the caller's cleanup; its name holds the process id.
public func makeScratchDirectory(_ label: String) -> String {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    var template = Array("\(base)/switchover-fuzz-\(label)-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
        guard let base = buffer.baseAddress, mkdtemp(base) != nil else { return nil }
        return String(cString: base)
    }
    guard let made else { fatalError("cannot create a scratch directory under \(base): errno \(errno)") }
    return made
}

/// Writes `bytes` to `path` (created or truncated).
public func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fatalError("cannot write \(path): errno \(errno)") }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
        guard n > 0 else { fatalError("cannot write \(path): errno \(errno)") }
        done += n
    }
}
