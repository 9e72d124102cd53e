// What the two programs that run inside the kernel-test guest share (kernel-vfio-check for
// make test-kernel, qemu-peer-check for make test-qemu): a guest stand-in for the VMController, a
// transport that waits for its peer to listen, the bridge from the engines' async `run` to these
// synchronous processes, and reading a device's whole state out. Not a product: test programs only.

#if os(Linux)
import Dispatch
import Glibc
import MigrationCore
import Synchronization
import VFIO

/// There is no guest in the guest's checks, only its running/stopped flag: a source's engine stops it
/// at the switchover, a destination's resumes it after loading.
public final class FlagGuest: VMController {
    private let running: Mutex<Bool>
    private let log = Mutex<[String]>([])

    public init(running: Bool) { self.running = Mutex(running) }

    public var isRunning: Bool { running.withLock { $0 } }
    /// "stop" and "resume", in the order the engine asked.
    public var calls: [String] { log.withLock { $0 } }

    public func stopVM() throws {
        running.withLock { $0 = false }
        log.withLock { $0.append("stop") }
    }

    public func resumeVM() throws {
        running.withLock { $0 = true }
        log.withLock { $0.append("resume") }
    }
}

/// A transport for a source that may start before its destination listens: connect is retried every
/// `retry` until `timeout`, then the last error is thrown.
public struct PatientTransport<Base: MigrationTransport>: MigrationTransport {
    public let base: Base
    public let timeout: Duration
    public let retry: Duration

    public init(_ base: Base, timeout: Duration, retry: Duration = .milliseconds(20)) {
        (self.base, self.timeout, self.retry) = (base, timeout, retry)
    }

    public func connect() throws -> any MigrationConnection {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            do {
                return try base.connect()
            } catch {
                guard clock.now < deadline else { throw error }
                let (seconds, attoseconds) = retry.components
                usleep(useconds_t(clamping: seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
            }
        }
    }

    public func listen() throws -> any MigrationListener { try base.listen() }
}

public enum KernelTestSupport {
    /// Runs an engine's async `run` from synchronous code and waits for it.
    public static func wait<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
        let outcome = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await operation()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        guard let result = outcome.withLock({ $0 }) else { throw CancellationError() }
        return try result.get()
    }

    /// RUNNING (or STOP) → STOP_COPY, everything read through the typed API, back to RUNNING.
    public static func readStateOut(_ device: any VFIOMigrationDevice) throws -> [UInt8] {
        guard let fd = try device.setState(.stopCopy) else {
            throw VFIOCheckAbort("\(device.name): STOP_COPY opened no data fd")
        }
        let bytes = try drain(fd)
        try device.setState(.running)
        return bytes
    }

    /// Reads a save fd to its end through the typed API.
    public static func drain(_ fd: VFIOMigrationDataFD) throws -> [UInt8] {
        var bytes: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        while case .bytes(let n) = try fd.read(into: buffer) { bytes += buffer[0..<n] }
        return bytes
    }

    /// One line, flushed at once (the console is the only output, interleaved with others').
    public static func printLine(_ line: String) {
        print(line)
        fflush(nil)
    }

    /// Lower-case hex, two digits a byte.
    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
#endif
