// The parent's side of the migration check: change the source's state through its BARs, read both
// devices' states, close them (a VFIO group opens once), start the destination and the source as two
// processes of this binary connected by a Unix socket, collect their checks, and compare the state read
// back out of the destination with the source's.

#if os(Linux)
import Glibc
import KernelTestSupport
import VFIO

enum MigrationRun {
    static let socketPath = "/tmp/kernel-vfio-check.sock"
    static func reportPath(_ role: String) -> String { "/tmp/kernel-vfio-check.\(role).report" }
    /// Both children must be done by then (TCG is slow; the migration itself takes well under a second).
    static let deadline: Duration = .seconds(120)
    /// The header of the config space compared before and after (ids, COMMAND, BARs).
    static let configBytes = 0x28
    /// BAR0 as the source's guest programs it: I/O space at 0xc000 (mtty's BAR0 is 8 bytes of I/O).
    static let sourceBAR0: [UInt8] = [0x01, 0xc0, 0x00, 0x00]

    static func run(source: KernelVFIODevice, destination: KernelVFIODevice, report: inout VFIOCheckReport) {
        var sourceBefore: [UInt8] = []
        var destinationBefore: [UInt8] = []
        var sourceConfig: [UInt8] = []
        var destinationConfigBefore: [UInt8] = []
        report.run(KernelCheck.migrationPrepare.name) { c in
            // Different registers from the behaviour checks' writes, whose state the destination now holds.
            KernelEnvironment.guestWrite(source, port: 1, register: KernelEnvironment.UART.transmit, bytes: Array("Go".utf8), &c)
            KernelEnvironment.guestWrite(source, port: 0, register: KernelEnvironment.UART.lineControl, bytes: [0x03], &c)
            sourceBefore = try KernelTestSupport.readStateOut(source)
            destinationBefore = try KernelTestSupport.readStateOut(destination)
            c.expect(sourceBefore != destinationBefore, "the source's state already equals the destination's")
            c.note("source state before: \(KernelTestSupport.hex(sourceBefore))")
            c.note("destination state before: \(KernelTestSupport.hex(destinationBefore))")
            // A BAR address in the source's config space, through the VFIO config region, as a guest's
            // BIOS would program it: the config state must carry it into the destination device.
            try source.writeConfigSpace(offset: 0x10, bytes: sourceBAR0)
            sourceConfig = try source.readConfigSpace(offset: 0, count: configBytes)
            destinationConfigBefore = try destination.readConfigSpace(offset: 0, count: configBytes)
            c.expect(sourceConfig != destinationConfigBefore, "the source's config space already equals the destination's")
            c.note(
                "source config: \(KernelTestSupport.hex(sourceConfig)), destination config before: \(KernelTestSupport.hex(destinationConfigBefore))"
            )
            // The children open the devices again: their groups must be free.
            try source.close()
            try destination.close()
        }

        var states: [String: [UInt8]] = [:]
        var destinationConfigAfter: [UInt8]?
        var childResults: [VFIOCheckResult] = []
        report.run(KernelCheck.migrationTwoProcesses.name) { c in
            for role in ["source", "destination"] { unlink(reportPath(role)) }
            unlink(socketPath)
            let children = [
                ("destination", ["--role", "destination", destination.name, socketPath, reportPath("destination"), source.name]),
                ("source", ["--role", "source", source.name, socketPath, reportPath("source")])
            ]
            var pids: [(role: String, pid: pid_t)] = []
            for (role, arguments) in children {
                switch ChildSpawn.start("/proc/self/exe", name: "kernel-vfio-check", arguments) {
                case .success(let pid): pids.append((role, pid))
                case .failure(let error): c.expect(false, "posix_spawn of the \(role): errno \(error.code)")
                }
            }
            let outcomes = ChildWait.wait(pids.map(\.pid), limit: deadline)
            for (role, pid) in pids {
                switch outcomes[pid] {
                case .ended(.exited(0))?: break
                case .ended(let end)?: c.expect(false, "the \(role) \(end)")
                case .killedAtDeadline(let reaped)?:
                    c.expect(
                        false,
                        "the \(role) did not finish within \(deadline): its process group was killed (SIGKILL)"
                            + (reaped ? "" : " and it was still there \(ChildWait.grace) later"))
                case .notAChild?, nil: c.expect(false, "the \(role) could not be waited for (ECHILD)")
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
                    } else if line.hasPrefix("config "), let bytes = KernelEnvironment.bytes(fromHex: line.dropFirst(7)) {
                        destinationConfigAfter = bytes
                    }
                }
            }
        }
        for result in childResults { report.record(result) }

        report.run(KernelCheck.migrationReadbackMatchesSource.name) { c in
            guard let sourceAfter = states["source"], let destinationAfter = states["destination"] else {
                throw VFIOCheckAbort("no state read back from \(states["source"] == nil ? "the source" : "the destination")")
            }
            c.expect(
                destinationAfter == sourceBefore,
                "destination state differs from the source's: \(firstDifference(destinationAfter, sourceBefore))")
            c.expect(
                sourceAfter == sourceBefore,
                "the source's state changed during the migration: \(firstDifference(sourceAfter, sourceBefore))")
            c.expect(destinationAfter != destinationBefore, "the destination's state did not change")
            c.note("destination state after: \(KernelTestSupport.hex(destinationAfter))")
        }

        // The generic handler's config state (QEMU's layout, read from the source's VFIO config region
        // and written into the destination's as QEMU's loader does): the destination device's own
        // config space now holds the source's COMMAND and BARs.
        report.run(KernelCheck.migrationConfigStateRestored.name) { c in
            guard let after = destinationConfigAfter else { throw VFIOCheckAbort("no config space read back from the destination") }
            c.note("destination config after: \(KernelTestSupport.hex(after))")
            c.expectEqual(Array(after[0x10..<0x14]), sourceBAR0, "the destination's BAR0")
            c.expectEqual(Array(after[0x04..<0x06]), Array(sourceConfig[0x04..<0x06]), "the destination's COMMAND")
            c.expectEqual(Array(after[0x10..<0x28]), Array(sourceConfig[0x10..<0x28]), "the destination's BARs")
            c.expect(after != destinationConfigBefore, "the destination's config space did not change")
        }
    }

    private static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String {
        guard a.count == b.count else { return "sizes \(a.count) and \(b.count)" }
        guard let index = a.indices.first(where: { a[$0] != b[$0] }) else { return "equal" }
        return "first at byte \(index): \(a[index]) vs \(b[index])"
    }
}
#endif
