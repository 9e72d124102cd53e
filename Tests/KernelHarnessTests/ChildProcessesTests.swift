#if os(Linux)
import Foundation
import Glibc
import Testing
import VFIO
@testable import kernel_vfio_check

/// Fake children for kernel-vfio-check's child handling: the forked child that asks the one request that
/// can hang (DeadlineChild) and the spawned migration roles (ChildSpawn + ChildWait).
@Suite("kernel-vfio-check's children: answers, signals, exit codes, hangs")
struct ChildProcessesTests {
    @Test("A child's answer comes back through the pipe: success, and an errno")
    func answers() {
        #expect(DeadlineChild.run(limit: .seconds(60)) { nil } == .answered(nil))
        #expect(DeadlineChild.run(limit: .seconds(60)) { .invalidArgument } == .answered(.invalidArgument))
    }

    @Test("A child that exits non-zero is a failure, never read as the errno with that number")
    func nonZeroExit() {
        // 22 is EINVAL, the answer the real check expects: the old exit-status channel read it as one.
        let outcome = DeadlineChild.run(limit: .seconds(60)) { _exit(22) }
        #expect(outcome == .failed("the child exited with status 22 before it answered"))
    }

    @Test("A child that exits 0 without answering is a failure")
    func silentExit() {
        #expect(DeadlineChild.run(limit: .seconds(60)) { _exit(0) } == .failed("the child exited with status 0 without an answer"))
    }

    @Test("A child killed by a signal is a failure naming the signal")
    func killedBySignal() {
        let outcome = DeadlineChild.run(limit: .seconds(60)) {
            _ = kill(getpid(), SIGKILL)
            while true { pause() }
        }
        #expect(outcome == .failed("the child was killed by signal 9 (SIGKILL) before it answered"))
    }

    @Test("A hung child is killed at the deadline with its whole process group")
    func hungChild() throws {
        // The child starts a grandchild (in its process group) that hangs too, tells us its pid, and hangs.
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let writeEnd = fds[1]
        // The deadline only has to outlast a fork and a write in the child, on a loaded machine.
        let outcome = DeadlineChild.run(limit: .seconds(2)) {
            var grandchild = fork()
            if grandchild == 0 { while true { pause() } }
            _ = withUnsafeBytes(of: &grandchild) { write(writeEnd, $0.baseAddress, $0.count) }
            while true { pause() }
        }
        close(writeEnd)
        guard case .timedOut(let what) = outcome else {
            Issue.record("want a time-out, got \(outcome)")
            return
        }
        #expect(what.hasPrefix("no answer within 2.0 seconds: the child's process group was killed (SIGKILL)"), "\(what)")
        var grandchild: pid_t = 0
        let n = withUnsafeMutableBytes(of: &grandchild) { read(fds[0], $0.baseAddress, $0.count) }
        try #require(n == MemoryLayout<pid_t>.size && grandchild > 0)
        #expect(Self.dies(grandchild), "the grandchild \(grandchild) outlived its group's kill")
    }

    @Test("Spawned children: exit status, signal, and a hang killed with its process group")
    func spawnedChildren() throws {
        let directory = try TemporaryDirectory()
        let pidFile = directory.path + "/grandchild.pid"
        func start(_ script: String) throws -> pid_t {
            try ChildSpawn.start("/bin/sh", name: "sh", ["-c", script]).get()
        }
        let exits = try start("exit 3")
        let killed = try start("kill -KILL $$")
        let fine = try start("exit 0")
        let outcomes = ChildWait.wait([exits, killed, fine], limit: .seconds(120))
        #expect(outcomes[exits] == .ended(.exited(3)))
        #expect(outcomes[killed] == .ended(.killed(signal: SIGKILL)))
        #expect(outcomes[fine] == .ended(.exited(0)))

        let hangs = try start("sleep 1000 & echo $! > \(pidFile).part && mv \(pidFile).part \(pidFile); wait")
        // Once its sleep runs, the hung child is given a short deadline.
        var polls = 0
        while !FileManager.default.fileExists(atPath: pidFile), polls < 6000 {
            usleep(10_000)
            polls += 1
        }
        #expect(ChildWait.wait([hangs], limit: .milliseconds(200))[hangs] == .killedAtDeadline(reaped: true))
        #expect("\(ChildEnd.exited(3))" == "exited with status 3")
        #expect("\(ChildEnd.killed(signal: SIGSEGV))" == "was killed by signal 11 (SIGSEGV)")
        let grandchild = try #require(
            pid_t(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(Self.dies(grandchild), "the hung child's sleep \(grandchild) outlived its group's kill")
    }

    @Test("A program that cannot be spawned is an error, not a child")
    func spawnFailure() {
        guard case .failure(let failure) = ChildSpawn.start("/nonexistent/kernel-vfio-check", name: "x", []) else {
            Issue.record("spawned a program that does not exist")
            return
        }
        #expect(failure.code == ENOENT)
    }

    /// Whether `pid` is gone or a zombie within 10 s (a liveness bound, not a timing assertion: it is
    /// reaped by whoever inherits it).
    static func dies(_ pid: pid_t) -> Bool {
        for _ in 0..<500 {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return true }
            let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
            if state == "Z" || state == "X" { return true }
            usleep(20_000)
        }
        return false
    }
}

/// A directory under /tmp removed when the value is dropped.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/kernel-harness-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ buffer in buffer.baseAddress.flatMap { mkdtemp($0) } }) else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` in the directory; returns its path. (Not for executables: see
    /// HostScriptTests.fake.)
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: false, encoding: .utf8)
        return file
    }
}
#endif
