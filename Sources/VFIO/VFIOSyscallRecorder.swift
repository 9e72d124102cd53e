import Synchronization
import SystemPackage

/// The kinds of call the seam carries.
package enum VFIOSyscallKind: Sendable, Equatable {
    case open, close, ioctl, read, write, pread, pwrite, lseek, poll, readlink, listDirectory
}

/// One recorded call through the seam.
package struct VFIOSyscallRecord: Sendable, Equatable, CustomStringConvertible {
    /// What was asked.
    package enum Call: Sendable, Equatable {
        case open(path: String, flags: Int32)
        case close
        /// `argument` holds the bytes of a buffer argument as passed in (or the integer argument).
        case ioctl(request: UInt, argument: Argument)
        case read(count: Int)
        case write(count: Int)
        case pread(count: Int, offset: Int64)
        case pwrite(count: Int, offset: Int64)
        case lseek(offset: Int64, whence: Int32)
        case poll(events: Int16)
        case readlink(path: String)
        case listDirectory(path: String)
    }

    /// An ioctl argument as recorded.
    package enum Argument: Sendable, Equatable {
        case none
        case value(UInt)
        case bytes([UInt8])
    }

    package var kind: VFIOSyscallKind {
        switch call {
        case .open: .open
        case .close: .close
        case .ioctl: .ioctl
        case .read: .read
        case .write: .write
        case .pread: .pread
        case .pwrite: .pwrite
        case .lseek: .lseek
        case .poll: .poll
        case .readlink: .readlink
        case .listDirectory: .listDirectory
        }
    }

    /// The fd operated on (nil for path calls).
    package var fd: Int32?
    package var call: Call
    /// The call's result: a count, fd or ioctl value, or the errno.
    package var result: Result<Int, Errno>
    /// An ioctl buffer's bytes after the call returned.
    package var argumentAfter: [UInt8]?
    /// Whether the result was injected rather than produced by the layer below.
    package var injected: Bool

    /// The ioctl request number, for ioctl records.
    package var request: UInt? {
        if case .ioctl(let request, _) = call { return request }
        return nil
    }

    /// The ioctl buffer's bytes as passed in, for ioctl records with a buffer.
    package var argumentBytes: [UInt8]? {
        if case .ioctl(_, .bytes(let bytes)) = call { return bytes }
        return nil
    }

    package var description: String {
        let outcome: String
        switch result {
        case .success(let value): outcome = "= \(value)"
        case .failure(let errno): outcome = "= -1 \(errno)\(injected ? " (injected)" : "")"
        }
        let fdText = fd.map { "fd \($0) " } ?? ""
        return "\(fdText)\(call) \(outcome)"
    }
}

/// A seam layer that records every call and can inject failures, wrapping another layer
/// (usually `VFIOSystem.live`). swift-system's mocking habit, as a value the code under test receives.
package final class VFIOSyscallRecorder: VFIOSyscalls {
    /// What an injected fault does.
    package enum FaultAction: Sendable {
        /// Fail with this errno without calling the layer below.
        case fail(Errno)
        /// Pass at most this many bytes to the layer below (a short read or write).
        case shortTransfer(Int)
    }

    private struct Fault {
        var kind: VFIOSyscallKind
        var request: UInt?
        var fd: Int32?
        var action: FaultAction
        var remaining: Int
    }

    private struct State {
        var records: [VFIOSyscallRecord] = []
        var faults: [Fault] = []
    }

    private let base: any VFIOSyscalls
    private let state = Mutex(State())

    package init(base: any VFIOSyscalls = VFIOSystem.live) {
        self.base = base
    }

    /// Every call so far, oldest first.
    package var records: [VFIOSyscallRecord] { state.withLock { $0.records } }

    /// The ioctl records so far.
    package var ioctls: [VFIOSyscallRecord] { records.filter { $0.kind == .ioctl } }

    /// Forgets the recorded calls (faults stay armed).
    package func clearRecords() { state.withLock { $0.records.removeAll() } }

    /// Makes the next `times` calls of `kind` (optionally only ioctl `request`, only on `fd`) fail with `errno`.
    package func inject(_ errno: Errno, on kind: VFIOSyscallKind, request: UInt? = nil, fd: Int32? = nil, times: Int = 1) {
        state.withLock {
            $0.faults.append(Fault(kind: kind, request: request, fd: fd, action: .fail(errno), remaining: times))
        }
    }

    /// Makes the next `times` reads or writes (per `kind`) transfer at most `maxBytes` bytes.
    package func limitTransfers(on kind: VFIOSyscallKind, to maxBytes: Int, fd: Int32? = nil, times: Int = 1) {
        state.withLock {
            $0.faults.append(Fault(kind: kind, request: nil, fd: fd, action: .shortTransfer(maxBytes), remaining: times))
        }
    }

    private func takeFault(_ kind: VFIOSyscallKind, fd: Int32?, request: UInt?) -> FaultAction? {
        state.withLock { state in
            guard
                let index = state.faults.firstIndex(where: { fault in
                    fault.kind == kind && fault.remaining > 0
                        && (fault.request == nil || fault.request == request)
                        && (fault.fd == nil || fault.fd == fd)
                })
            else { return nil }
            state.faults[index].remaining -= 1
            let action = state.faults[index].action
            if state.faults[index].remaining == 0 { state.faults.remove(at: index) }
            return action
        }
    }

    private func record(
        _ call: VFIOSyscallRecord.Call, fd: Int32?, result: Result<Int, Errno>, after: [UInt8]? = nil, injected: Bool
    ) {
        state.withLock {
            $0.records.append(VFIOSyscallRecord(fd: fd, call: call, result: result, argumentAfter: after, injected: injected))
        }
    }

    /// Runs `body` unless an armed fault fails the call, and records the outcome. `body` is given the
    /// byte limit of an armed `.shortTransfer` (nil when none is armed); only reads and writes apply it.
    private func perform<T>(
        _ kind: VFIOSyscallKind, fd: Int32?, request: UInt? = nil, _ call: VFIOSyscallRecord.Call,
        asInt: (T) -> Int, _ body: (_ transferLimit: Int?) -> Result<T, Errno>
    ) -> Result<T, Errno> {
        let transferLimit: Int?
        switch takeFault(kind, fd: fd, request: request) {
        case .fail(let errno):
            record(call, fd: fd, result: .failure(errno), injected: true)
            return .failure(errno)
        case .shortTransfer(let limit): transferLimit = limit
        case nil: transferLimit = nil
        }
        let result = body(transferLimit)
        record(call, fd: fd, result: result.map(asInt), injected: false)
        return result
    }

    private func perform<T>(
        _ kind: VFIOSyscallKind, fd: Int32?, request: UInt? = nil, _ call: VFIOSyscallRecord.Call,
        asInt: (T) -> Int, _ body: () -> Result<T, Errno>
    ) -> Result<T, Errno> {
        perform(kind, fd: fd, request: request, call, asInt: asInt) { _ in body() }
    }

    package func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
        perform(.open, fd: nil, .open(path: path, flags: flags), asInt: { Int($0) }) { base.open(path, flags) }
    }

    package func close(_ fd: Int32) -> Result<Void, Errno> {
        perform(.close, fd: fd, .close, asInt: { _ in 0 }) { base.close(fd) }
    }

    package func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        let recorded: VFIOSyscallRecord.Argument
        switch argument {
        case .none: recorded = .none
        case .value(let value): recorded = .value(value)
        case .buffer(let buffer): recorded = .bytes(Array(buffer))
        }
        let call = VFIOSyscallRecord.Call.ioctl(request: request, argument: recorded)
        if case .fail(let errno) = takeFault(.ioctl, fd: fd, request: request) {
            record(call, fd: fd, result: .failure(errno), injected: true)
            return .failure(errno)
        }
        let result = base.ioctl(fd, request, argument)
        var after: [UInt8]?
        if case .buffer(let buffer) = argument { after = Array(buffer) }
        record(call, fd: fd, result: result.map { Int($0) }, after: after, injected: false)
        return result
    }

    package func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        perform(.read, fd: fd, .read(count: buffer.count), asInt: { $0 }) { (limit: Int?) in
            base.read(fd, into: limit.map { UnsafeMutableRawBufferPointer(rebasing: buffer.prefix($0)) } ?? buffer)
        }
    }

    package func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        perform(.write, fd: fd, .write(count: buffer.count), asInt: { $0 }) { (limit: Int?) in
            base.write(fd, from: limit.map { UnsafeRawBufferPointer(rebasing: buffer.prefix($0)) } ?? buffer)
        }
    }

    package func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        perform(.pread, fd: fd, .pread(count: buffer.count, offset: offset), asInt: { $0 }) {
            base.pread(fd, into: buffer, offset: offset)
        }
    }

    package func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        perform(.pwrite, fd: fd, .pwrite(count: buffer.count, offset: offset), asInt: { $0 }) {
            base.pwrite(fd, from: buffer, offset: offset)
        }
    }

    package func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno> {
        perform(.lseek, fd: fd, .lseek(offset: offset, whence: whence), asInt: { Int($0) }) {
            base.lseek(fd, offset, whence)
        }
    }

    package func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        perform(.poll, fd: fd, .poll(events: events), asInt: { Int($0) }) {
            base.poll(fd, events: events, timeoutMilliseconds: timeoutMilliseconds)
        }
    }

    package func readlink(_ path: String) -> Result<String, Errno> {
        perform(.readlink, fd: nil, .readlink(path: path), asInt: { $0.utf8.count }) { base.readlink(path) }
    }

    package func listDirectory(_ path: String) -> Result<[String], Errno> {
        perform(.listDirectory, fd: nil, .listDirectory(path: path), asInt: { $0.count }) { base.listDirectory(path) }
    }
}
