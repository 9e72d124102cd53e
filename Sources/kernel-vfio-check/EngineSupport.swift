// What the migration's child processes need around MigrationCore's engines: a guest stand-in for the
// VMController, a Unix-socket transport that waits for the destination to listen, the parameters both
// ends share, and a bridge from the engines' async `run` to these synchronous processes.

#if os(Linux)
import Dispatch
import Glibc
import MigrationCore
import MigrationStream
import Synchronization

/// There is no guest in the mtty test, only its running/stopped flag: the source's engine stops it at
/// the switchover, the destination's resumes it after loading.
final class FlagGuest: VMController {
    private let running: Mutex<Bool>
    private let log = Mutex<[String]>([])

    init(running: Bool) { self.running = Mutex(running) }

    var isRunning: Bool { running.withLock { $0 } }
    /// "stop" and "resume", in the order the engine asked.
    var calls: [String] { log.withLock { $0 } }

    func stopVM() throws {
        running.withLock { $0 = false }
        log.withLock { $0.append("stop") }
    }

    func resumeVM() throws {
        running.withLock { $0 = true }
        log.withLock { $0.append("resume") }
    }
}

/// `unix:PATH` for a source that may start before its destination listens: connect is retried until
/// `timeout`.
struct PatientUnixSocketTransport: MigrationTransport {
    let base: UnixSocketTransport
    let timeout: Duration

    init(path: String, timeout: Duration = .seconds(30)) {
        base = UnixSocketTransport(path: path)
        self.timeout = timeout
    }

    func connect() throws -> any MigrationConnection {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            do {
                return try base.connect()
            } catch {
                guard clock.now < deadline else { throw error }
                usleep(20_000)
            }
        }
    }

    func listen() throws -> any MigrationListener { try base.listen() }
}

enum EngineSupport {
    /// The machine both ends run.
    static let configuration = MachineConfiguration(machineType: "kernel-vfio-check")

    /// Both ends: switchover-ack on; a fixed switchover bandwidth (1 GiB/s, so a 300 ms threshold of
    /// ~300 MiB) makes the decision wait for the acknowledgement alone, not for a measurement.
    static var parameters: MigrationParameters {
        var parameters = MigrationParameters()
        parameters.switchoverAck = true
        parameters.switchoverBandwidth = 1 << 30
        return parameters
    }

    /// Runs an engine's async `run` from synchronous code and waits for it.
    static func wait<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
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
}
#endif
