import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process for tests, started with `posix_spawn` and waited for with `poll` and `waitpid`.
///
/// Foundation's `Process` waits by running a run loop on the calling thread; with several
/// tests spawning at once in one test process, that churn of run-loop timers and dispatch
/// sources has crashed libdispatch's event loop (a segfault in `_dispatch_event_loop_drain`,
/// seen in CI). This runner touches neither: it reads the child's pipes with `poll` on the
/// thread that waits, and reaps the child with `waitpid`. Every pipe is close-on-exec, so a
/// child spawned concurrently by another test never holds this one's pipes open.
public final class ChildProcess: Sendable {
    /// What a finished child left.
    public struct Result: Sendable, CustomStringConvertible {
        /// The exit status, or 128 + the signal that killed it.
        public var status: Int32
        /// The signal that killed it, if one did.
        public var signal: Int32?
        /// Its standard output (and standard error, when merged).
        public var stdout: String
        public var stderr: String
        /// Whether it was killed for running past the time limit.
        public var timedOut: Bool

        public var description: String {
            "status \(status)\(signal.map { " (signal \($0))" } ?? "")\(timedOut ? ", killed after the time limit" : "")\n"
                + "stdout: \(stdout.suffix(2000))\nstderr: \(stderr.suffix(2000))"
        }
    }

    /// Where the child's standard error goes.
    public enum ErrorOutput: Sendable {
        /// Its own pipe: ``Result/stderr``.
        case separate
        /// Into standard output, interleaved as written.
        case merged
    }

    public enum SpawnError: Error, CustomStringConvertible {
        case system(String, Int32)

        public var description: String {
            switch self {
            case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
            }
        }
    }

    /// The child's pid.
    public let pid: pid_t
    private let stdoutFD: Int32
    private let stderrFD: Int32?
    private let finished = Mutex(false)

    /// Starts `executable` with `arguments` (argv[0] is the executable's path).
    /// - Parameters:
    ///   - environment: the child's whole environment; nil = this process's.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        errorOutput: ErrorOutput = .separate
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The test process may ignore SIGPIPE or block signals; the child starts clean.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        // A process group of its own, so a timeout kills the child's children too.
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))

        // The child's pipe ends are closed here once it has them; ours only if it never started.
        var toClose: [Int32] = []
        var ours: [Int32] = []
        var spawned = false
        defer { for fd in toClose + (spawned ? [] : ours) { _ = close(fd) } }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        let out = try Self.makePipe()
        toClose.append(out.write)
        ours.append(out.read)
        posix_spawn_file_actions_adddup2(&actions, out.write, 1)
        var errRead: Int32?
        switch errorOutput {
        case .merged:
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        case .separate:
            let err = try Self.makePipe()
            toClose.append(err.write)
            ours.append(err.read)
            posix_spawn_file_actions_adddup2(&actions, err.write, 2)
            errRead = err.read
        }

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { for p in env ?? [] { free(p) } }
        var pid: pid_t = 0
        let rc: Int32 = argv.withUnsafeBufferPointer { argvBuffer in
            if let env {
                return env.withUnsafeBufferPointer { envBuffer in
                    posix_spawn(&pid, executable, &actions, &attributes, argvBuffer.baseAddress!, envBuffer.baseAddress!)
                }
            }
            return posix_spawn(&pid, executable, &actions, &attributes, argvBuffer.baseAddress!, environ)
        }
        guard rc == 0 else { throw SpawnError.system("posix_spawn \(executable)", rc) }
        spawned = true
        self.pid = pid
        self.stdoutFD = out.read
        self.stderrFD = errRead
    }

    deinit {
        if !finished.withLock({ $0 }) {
            _ = kill(-pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            _ = close(stdoutFD)
            if let stderrFD { _ = close(stderrFD) }
        }
    }

    /// Collects the output until both pipes close and the child exits, killing its process
    /// group (SIGKILL) once `limit` has passed (and reading on at most 5 s more). Blocks the calling thread;
    /// call it once.
    public func finish(limit: Duration = .seconds(120)) -> Result {
        precondition(!finished.withLock { $0 }, "finish() called twice")
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        var timedOut = false
        var buffers: [Int32: [UInt8]] = [:]
        var open: [Int32] = [stdoutFD] + (stderrFD.map { [$0] } ?? [])
        var chunk = [UInt8](repeating: 0, count: 65536)

        func checkDeadline() {
            if !timedOut && clock.now >= deadline {
                timedOut = true
                _ = kill(-pid, SIGKILL)
            }
        }

        while !open.isEmpty {
            checkDeadline()
            // A descendant that left the process group may still hold the pipes open: read on
            // briefly for what it wrote, then stop instead of waiting for it.
            if timedOut && clock.now >= deadline + .seconds(5) { break }
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), 100)
            if ready < 0 && errno != EINTR { break }
            for pfd in fds where pfd.revents != 0 {
                let n = chunk.withUnsafeMutableBytes { read(pfd.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    buffers[pfd.fd, default: []].append(contentsOf: chunk[0..<n])
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    _ = close(pfd.fd)
                    open.removeAll { $0 == pfd.fd }
                }
            }
        }

        for fd in open { _ = close(fd) }

        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { break }
            checkDeadline()
            usleep(10_000)
        }
        finished.withLock { $0 = true }

        let termination = status & 0x7f
        let signal: Int32? = termination != 0 && termination != 0x7f ? termination : nil
        let code = signal.map { 128 + $0 } ?? (status >> 8) & 0xff
        return Result(
            status: code, signal: signal,
            stdout: String(decoding: buffers[stdoutFD] ?? [], as: UTF8.self),
            stderr: stderrFD.map { String(decoding: buffers[$0] ?? [], as: UTF8.self) } ?? "",
            timedOut: timedOut
        )
    }

    /// ``finish(limit:)`` on a thread of its own, so an async test does not hold one of the
    /// few cooperative threads while the child runs (a blocked pool stalls every other test's
    /// tasks: on 2 cores it has 2 threads).
    public func finished(limit: Duration = .seconds(120)) async -> Result {
        await collect(limit: limit).value
    }

    /// A result being collected on a thread of its own (see ``collect(limit:)``).
    public final class Pending: Sendable {
        private enum State {
            case running([CheckedContinuation<Result, Never>])
            case done(Result)
        }
        private let state = Mutex<State>(.running([]))

        fileprivate func deliver(_ value: Result) {
            let waiters = state.withLock { s -> [CheckedContinuation<Result, Never>] in
                guard case .running(let waiting) = s else { return [] }
                s = .done(value)
                return waiting
            }
            for waiter in waiters { waiter.resume(returning: value) }
        }

        /// The result, once the child has finished, without blocking a thread.
        public var value: Result {
            get async {
                await withCheckedContinuation { (continuation: CheckedContinuation<Result, Never>) in
                    let ready = state.withLock { s -> Result? in
                        switch s {
                        case .done(let value): return value
                        case .running(var waiting):
                            waiting.append(continuation)
                            s = .running(waiting)
                            return nil
                        }
                    }
                    if let ready { continuation.resume(returning: ready) }
                }
            }
        }
    }

    /// Starts ``finish(limit:)`` on a thread of its own now, so that several children can be
    /// drained at once (a child blocked on a full pipe never stalls another).
    public func collect(limit: Duration = .seconds(120)) -> Pending {
        let pending = Pending()
        let thread = Thread { pending.deliver(self.finish(limit: limit)) }
        thread.name = "child \(pid)"
        thread.start()
        return pending
    }

    /// Runs `executable` to the end.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        errorOutput: ErrorOutput = .separate, limit: Duration = .seconds(120)
    ) throws -> Result {
        try ChildProcess(executable, arguments, environment: environment, errorOutput: errorOutput).finish(limit: limit)
    }

    // MARK: -

    private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32
    private static let pipe2: Pipe2? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "pipe2") else { return nil }
        return unsafeBitCast(symbol, to: Pipe2.self)
    }()

    /// A close-on-exec pipe, created atomically so a concurrent spawn cannot inherit it.
    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard let pipe2 else { throw SpawnError.system("pipe2 (missing)", ENOSYS) }
        guard fds.withUnsafeMutableBufferPointer({ pipe2($0.baseAddress, Int32(O_CLOEXEC)) }) == 0 else {
            throw SpawnError.system("pipe2", errno)
        }
        return (fds[0], fds[1])
    }
}
