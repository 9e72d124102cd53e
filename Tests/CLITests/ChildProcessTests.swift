import Foundation
import Glibc
import TestSupport
import Testing

/// The tests' child-process runner itself.
@Suite struct ChildProcessTests {
    @Test func itCollectsBothStreamsAndTheExitStatus() throws {
        let run = try ChildProcess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(run.status == 3 && run.signal == nil && !run.timedOut)
        #expect(run.stdout == "out\n" && run.stderr == "err\n")
        let merged = try ChildProcess.run("/bin/sh", ["-c", "echo one; echo two >&2"], errorOutput: .merged)
        #expect(merged.stdout == "one\ntwo\n" && merged.stderr == "")
    }

    @Test(.timeLimit(.minutes(1)))
    func aChildPastItsLimitIsKilledWithItsOwnChildren() throws {
        // The background sleep holds stdout open; it prints its pid first.
        let run = try ChildProcess.run("/bin/sh", ["-c", "sleep 300 & echo $!; sleep 300"], limit: .milliseconds(300))
        #expect(run.timedOut)
        #expect(run.signal == SIGKILL && run.status == 128 + SIGKILL)
        let grandchild = try #require(pid_t(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let alive = Self.isRunning(grandchild)
        #expect(!alive, "the child's own child survived the timeout")
        if alive { _ = kill(grandchild, SIGKILL) }
    }

    /// Whether `pid` exists and is not a zombie.
    static func isRunning(_ pid: pid_t) -> Bool {
        for _ in 0..<50 {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            if stat[close...].dropFirst(2).first == "Z" { return false }
            usleep(20_000)  // a SIGKILL takes effect asynchronously
        }
        return true
    }
}
