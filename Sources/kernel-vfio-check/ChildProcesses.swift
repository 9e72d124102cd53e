// The child processes kernel-vfio-check starts, and how it tells their ends apart: a request asked from
// a forked child with a deadline (the one that hangs kernels without the STOP_COPY→PRE_COPY fix), and the
// migration's two spawned roles. A child killed by a signal, exiting non-zero, exiting without an answer
// or outliving its deadline is named as such; a child past its deadline is killed with its whole process
// group. Tests: Tests/KernelHarnessTests.

#if os(Linux)
import Glibc
import VFIO

/// How a child process ended, read from its `waitpid` status.
enum ChildEnd: Equatable, CustomStringConvertible {
    case exited(Int32)
    case killed(signal: Int32)

    init(waitStatus status: Int32) {
        let signal = status & 0x7F
        self = signal == 0 ? .exited((status >> 8) & 0xFF) : .killed(signal: signal)
    }

    var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .killed(let signal): "was killed by signal \(signal) (\(Self.signalName(signal)))"
        }
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGHUP: "SIGHUP"
        case SIGINT: "SIGINT"
        case SIGQUIT: "SIGQUIT"
        case SIGILL: "SIGILL"
        case SIGTRAP: "SIGTRAP"
        case SIGABRT: "SIGABRT"
        case SIGBUS: "SIGBUS"
        case SIGFPE: "SIGFPE"
        case SIGKILL: "SIGKILL"
        case SIGSEGV: "SIGSEGV"
        case SIGPIPE: "SIGPIPE"
        case SIGALRM: "SIGALRM"
        case SIGTERM: "SIGTERM"
        default: "signal \(signal)"
        }
    }
}

/// How waiting for one child with a deadline came out.
enum ChildWaitOutcome: Equatable {
    /// It ended before the deadline.
    case ended(ChildEnd)
    /// It outlived the deadline and its process group was sent SIGKILL; `reaped` says whether it was
    /// gone within the grace period after (a process spinning in the kernel may not die at once).
    case killedAtDeadline(reaped: Bool)
    /// `waitpid` says it is not a child of this process (ECHILD): nothing to wait for or kill.
    case notAChild
}

enum ChildWait {
    /// How long a child killed at its deadline is given to die before it is left behind.
    static let grace: Duration = .seconds(5)

    /// Waits for every child in `pids` until `limit` has passed; each one still running then is killed
    /// with its process group (each child leads its own) and reaped for at most ``grace`` more.
    static func wait(_ pids: [pid_t], limit: Duration) -> [pid_t: ChildWaitOutcome] {
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        var outcomes: [pid_t: ChildWaitOutcome] = [:]
        func reap() {
            for pid in pids where outcomes[pid] == nil {
                var status: Int32 = 0
                let r = waitpid(pid, &status, WNOHANG)
                if r == pid {
                    outcomes[pid] = .ended(ChildEnd(waitStatus: status))
                } else if r < 0, errno == ECHILD {
                    outcomes[pid] = .notAChild
                }
            }
        }
        reap()
        while outcomes.count < pids.count, clock.now < deadline {
            usleep(20_000)
            reap()
        }
        let late = pids.filter { outcomes[$0] == nil }
        for pid in late {
            _ = kill(-pid, SIGKILL)
            _ = kill(pid, SIGKILL)
        }
        let graceEnd = clock.now + grace
        var lateReaped: Set<pid_t> = []
        while lateReaped.count < late.count, clock.now < graceEnd {
            for pid in late where !lateReaped.contains(pid) {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { lateReaped.insert(pid) }
            }
            if lateReaped.count < late.count { usleep(20_000) }
        }
        for pid in late { outcomes[pid] = .killedAtDeadline(reaped: lateReaped.contains(pid)) }
        return outcomes
    }
}

enum ChildSpawn {
    struct Failure: Error, Equatable {
        /// posix_spawn's error number.
        var code: Int32
    }

    /// Starts `path` with `arguments` (argv[0] is `name`) and `environment`, in a process group of its
    /// own, so a deadline kills whatever it started too; stdout and stderr are inherited.
    static func start(_ path: String, name: String, _ arguments: [String], environment: [String] = []) -> Result<pid_t, Failure> {
        fflush(nil)
        let argv: [UnsafeMutablePointer<CChar>?] = ([name] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, nil, &attributes, argv, envp)
        return rc == 0 ? .success(pid) : .failure(Failure(code: rc))
    }
}

/// How a request asked from a forked child came back.
enum DeadlineOutcome: Equatable {
    /// The child answered: the request's errno, nil on success.
    case answered(VFIOErrno?)
    /// The child ended without an answer (a signal, a non-zero exit, an exit without writing one).
    case failed(String)
    /// No answer before the deadline: the child's process group was killed.
    case timedOut(String)
}

enum DeadlineChild {
    /// The first four bytes of the child's answer on its pipe, so nothing else is mistaken for one.
    static let answerMagic: UInt32 = 0x4B56_4341  // "KVCA"

    /// Runs `request` in a forked child (it shares this process's fds, so the device fds too) in a
    /// process group of its own, and waits at most `limit` for its answer. The answer comes back on a
    /// pipe, not as the exit status, so a child that dies or exits non-zero is never read as an errno.
    ///
    /// `request` runs after `fork` in the child: it must only make system calls (no locks another
    /// thread may have held at the fork).
    static func run(limit: Duration, _ request: () -> VFIOErrno?) -> DeadlineOutcome {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return .failed("pipe: errno \(errno)") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        // Read only after the child ended, without blocking: a process another thread spawned in the
        // meantime may hold a copy of the write end.
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
        defer { close(readEnd) }
        fflush(nil)
        let pid = fork()
        if pid == 0 {
            _ = setpgid(0, 0)
            close(readEnd)
            let answer = request()
            var message: (UInt32, Int32) = (answerMagic, answer?.rawValue ?? 0)
            let written = withUnsafeBytes(of: &message) { write(writeEnd, $0.baseAddress, $0.count) }
            _exit(written == MemoryLayout<(UInt32, Int32)>.size ? 0 : 125)
        }
        close(writeEnd)
        guard pid > 0 else { return .failed("fork: errno \(errno)") }
        // Also here: the group must exist before a kill at the deadline, whichever runs first.
        _ = setpgid(pid, pid)

        switch ChildWait.wait([pid], limit: limit)[pid] {
        case .killedAtDeadline(let reaped)?:
            return .timedOut(
                "no answer within \(limit): the child's process group was killed (SIGKILL)"
                    + (reaped ? "" : ", and the child was still there \(ChildWait.grace) later (stuck in the kernel)"))
        case .ended(.exited(0))?:
            var message: (UInt32, Int32) = (0, 0)
            let n = withUnsafeMutableBytes(of: &message) { read(readEnd, $0.baseAddress, $0.count) }
            guard n == MemoryLayout<(UInt32, Int32)>.size, message.0 == answerMagic else {
                return .failed("the child exited with status 0 without an answer")
            }
            return .answered(message.1 == 0 ? nil : VFIOErrno(rawValue: message.1))
        case .ended(let end)?:
            return .failed("the child \(end) before it answered")
        case .notAChild?, nil:
            return .failed("the child could not be waited for (ECHILD)")
        }
    }
}
#endif
