// The parent's side of the migration check: change the source's state through its BARs, read both
// devices' states, close them (a VFIO group opens once), start the destination and the source as two
// processes of this binary connected by a Unix socket, collect their checks, and compare the state read
// back out of the destination with the source's.

#if os(Linux)
import Glibc
import VFIO

enum MigrationRun {
    static let socketPath = "/tmp/kernel-vfio-check.sock"
    static func reportPath(_ role: String) -> String { "/tmp/kernel-vfio-check.\(role).report" }
    /// Both children must be done by then (TCG is slow; the migration itself takes well under a second).
    static let deadlineSeconds = 120

    static func run(source: KernelVFIODevice, destination: KernelVFIODevice, report: inout VFIOCheckReport) {
        var sourceBefore: [UInt8] = []
        var destinationBefore: [UInt8] = []
        report.run("migration-prepare") { c in
            // Different registers from the behaviour checks' writes, whose state the destination now holds.
            KernelEnvironment.guestWrite(source, port: 1, register: KernelEnvironment.UART.transmit, bytes: Array("Go".utf8), &c)
            KernelEnvironment.guestWrite(source, port: 0, register: KernelEnvironment.UART.lineControl, bytes: [0x03], &c)
            sourceBefore = try KernelEnvironment.readStateOut(source)
            destinationBefore = try KernelEnvironment.readStateOut(destination)
            c.expect(sourceBefore != destinationBefore, "the source's state already equals the destination's")
            c.note("source state before: \(KernelEnvironment.hex(sourceBefore))")
            c.note("destination state before: \(KernelEnvironment.hex(destinationBefore))")
            // The children open the devices again: their groups must be free.
            try source.close()
            try destination.close()
        }

        var states: [String: [UInt8]] = [:]
        var childResults: [VFIOCheckResult] = []
        report.run("migration-two-processes") { c in
            for role in ["source", "destination"] { unlink(reportPath(role)) }
            unlink(socketPath)
            let children = [
                ("destination", ["--role", "destination", destination.name, socketPath, reportPath("destination"), source.name]),
                ("source", ["--role", "source", source.name, socketPath, reportPath("source")]),
            ]
            var pids: [(role: String, pid: pid_t)] = []
            for (role, arguments) in children {
                switch spawnSelf(arguments) {
                case .success(let pid): pids.append((role, pid))
                case .failure(let error): c.expect(false, "posix_spawn of the \(role): errno \(error.code)")
                }
            }
            for (role, status) in waitAll(pids, seconds: deadlineSeconds) {
                if let status {
                    c.expectEqual(status, 0, "the \(role)'s exit status")
                } else {
                    c.expect(false, "the \(role) did not finish within \(deadlineSeconds) s (killed)")
                }
            }
            for role in ["source", "destination"] {
                guard let lines = LineCollector.read(from: reportPath(role)) else {
                    c.expect(false, "no report from the \(role)")
                    continue
                }
                for line in lines {
                    if line.hasPrefix("PASS ") {
                        childResults.append(VFIOCheckResult(name: String(line.dropFirst(5)), problems: []))
                    } else if line.hasPrefix("FAIL "), let colon = line.firstIndex(of: ":") {
                        let name = String(line[line.index(line.startIndex, offsetBy: 5)..<colon])
                        childResults.append(VFIOCheckResult(name: name, problems: [String(line[line.index(after: colon)...].dropFirst())]))
                    } else if line.hasPrefix("state "), let bytes = KernelEnvironment.bytes(fromHex: line.dropFirst(6)) {
                        states[role] = bytes
                    }
                }
            }
        }
        for result in childResults { report.record(result) }

        report.run("migration-readback-matches-source") { c in
            guard let sourceAfter = states["source"], let destinationAfter = states["destination"] else {
                throw VFIOCheckAbort("no state read back from \(states["source"] == nil ? "the source" : "the destination")")
            }
            c.expect(destinationAfter == sourceBefore, "destination state differs from the source's: \(firstDifference(destinationAfter, sourceBefore))")
            c.expect(sourceAfter == sourceBefore, "the source's state changed during the migration: \(firstDifference(sourceAfter, sourceBefore))")
            c.expect(destinationAfter != destinationBefore, "the destination's state did not change")
            c.note("destination state after: \(KernelEnvironment.hex(destinationAfter))")
        }
    }

    /// Starts this binary again (/proc/self/exe) with `arguments`; stdout and stderr are inherited.
    private static func spawnSelf(_ arguments: [String]) -> Result<pid_t, SpawnError> {
        fflush(nil)
        let argv: [UnsafeMutablePointer<CChar>?] = (["kernel-vfio-check"] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/proc/self/exe", nil, nil, argv, envp)
        return rc == 0 ? .success(pid) : .failure(SpawnError(code: rc))
    }

    /// Waits for every child; a child still running after `seconds` is killed and reported as nil.
    private static func waitAll(_ children: [(role: String, pid: pid_t)], seconds: Int) -> [(String, Int32?)] {
        var statuses: [pid_t: Int32] = [:]
        var polls = 0
        while statuses.count < children.count, polls < seconds * 20 {
            for child in children where statuses[child.pid] == nil {
                var status: Int32 = 0
                if waitpid(child.pid, &status, WNOHANG) == child.pid {
                    // Exit status, or 128 + signal as a shell shows it.
                    statuses[child.pid] = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
                }
            }
            usleep(50_000)
            polls += 1
        }
        for child in children where statuses[child.pid] == nil {
            kill(child.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(child.pid, &status, 0)
        }
        return children.map { ($0.role, statuses[$0.pid]) }
    }

    struct SpawnError: Error {
        var code: Int32
    }

    private static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String {
        guard a.count == b.count else { return "sizes \(a.count) and \(b.count)" }
        guard let index = a.indices.first(where: { a[$0] != b[$0] }) else { return "equal" }
        return "first at byte \(index): \(a[index]) vs \(b[index])"
    }
}
#endif
