#if canImport(Glibc)
import Glibc
#endif

/// `file:PATH`: migrate to a file and load from it. No return path, so no switchover-ack
/// and no extensions.
public struct FileTransport: MigrationTransport {
    public var path: String

    public init(path: String) { self.path = path }

    public func connect() throws -> any MigrationConnection {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw systemError("open \(path) for writing") }
        return DescriptorConnection(fd: fd, supportsReturnPath: false, label: "file:\(path)")
    }

    public func listen() throws -> any MigrationListener {
        OnceListener { [path] in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw systemError("open \(path) for reading") }
            return DescriptorConnection(fd: fd, supportsReturnPath: false, label: "file:\(path)")
        }
    }
}
