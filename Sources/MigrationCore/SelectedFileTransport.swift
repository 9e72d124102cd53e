import MigrationStream
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `file:PATH` for a destination that loads only some of the file's sections: a file another VMM
/// wrote (QEMU's), read through a ``SectionSelection`` so that the engine sees the file header,
/// the configuration, the kept sections, the commands and EOF, and never a section it has no
/// handler for. The file is read in place (`lseek` from one kept range to the next); nothing is
/// copied.
///
/// ```swift
/// let selection = try SectionSelection(fileAt: path) { idstr, instance in
///     registry.entry(idstr: idstr, instanceID: instance) != nil
/// }
/// try await destination.run(from: SelectedFileTransport(path: path, selection: selection))
/// ```
public struct SelectedFileTransport: MigrationTransport {
    public let path: String
    public let selection: SectionSelection

    public init(path: String, selection: SectionSelection) { (self.path, self.selection) = (path, selection) }

    /// A selection is read, never written.
    public func connect() throws -> any MigrationConnection {
        throw TransportError.system(operation: "write \(path): a selected file is for a destination", errno: .notSupported)
    }

    public func listen() throws -> any MigrationListener {
        OnceListener { [path, selection] in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw systemError("open \(path) for reading") }
            let base = DescriptorConnection(fd: fd, supportsReturnPath: false, label: "file:\(path) (selected)")
            return SelectedRangesConnection(base: base, ranges: selection.ranges)
        }
    }
}

/// Reads a file's ranges one after the other, as one stream.
final class SelectedRangesConnection: MigrationConnection, CustomStringConvertible {
    private let base: DescriptorConnection
    private let ranges: [Range<Int>]
    /// The range being read and how far into it.
    private let position = Mutex((index: 0, offset: 0, seeked: false))

    init(base: DescriptorConnection, ranges: [Range<Int>]) { (self.base, self.ranges) = (base, ranges) }

    var description: String { base.description }
    var supportsReturnPath: Bool { false }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        // One reader at a time (the engine's main channel); the lock keeps the position whole.
        try position.withLock { p -> Int in
            while p.index < ranges.count, p.offset >= ranges[p.index].count {
                p.index += 1
                p.offset = 0
                p.seeked = false
            }
            guard p.index < ranges.count, !buffer.isEmpty else { return 0 }
            let range = ranges[p.index]
            if !p.seeked {
                guard lseek(base.fd, off_t(range.lowerBound + p.offset), SEEK_SET) >= 0 else {
                    throw systemError("seek \(base.description) to \(range.lowerBound + p.offset)")
                }
                p.seeked = true
            }
            let want = min(buffer.count, range.count - p.offset)
            let n = try base.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]))
            guard n > 0 else {
                throw StreamError.truncated(
                    offset: range.lowerBound + p.offset, expected: "the rest of a selected range of \(base.description)")
            }
            p.offset += n
            return n
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        throw TransportError.system(operation: "write to \(base.description)", errno: .notSupported)
    }

    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }
}
