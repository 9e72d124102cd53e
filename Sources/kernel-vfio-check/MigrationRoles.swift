// The two child processes of the migration check: `--role source` and `--role destination`. Each opens
// its mtty mdev through the group path, wraps it in the generic VFIO-PCI handler, registers it under the
// same idstr, runs MigrationCore's engine for its side over the Unix socket (switchover-ack on), reads
// its device's state back out through STOP_COPY, and writes its PASS/FAIL lines and that state to a
// report file the parent reads.
//
// Usage: kernel-vfio-check --role source SRC_UUID SOCKET REPORT
//        kernel-vfio-check --role destination DST_UUID SOCKET REPORT SRC_UUID

#if os(Linux)
import Glibc
import KernelTestSupport
import MigrationCore
import VFIO
import VFIOPCIHandler

enum MigrationRole {
    /// Both ends register the device under the idstr QEMU would give it in the guest.
    static let idstr = VFIOPCIHandler.idstr(for: "0000:00:05.0")
    static let ports = 2
    static let headerSize = 24
    static var streamSize: Int { headerSize + 36 * ports }

    static func main(_ arguments: [String]) -> Int32 {
        // A peer that died must show as a write error, not kill this process.
        signal(SIGPIPE, SIG_IGN)
        guard arguments.count >= 4, arguments[0] == "source" || (arguments[0] == "destination" && arguments.count >= 5) else {
            KernelTestSupport.printLine(
                "usage: kernel-vfio-check --role source UUID SOCKET REPORT | --role destination UUID SOCKET REPORT SRC_UUID")
            return 2
        }
        let role = arguments[0]
        let uuid = arguments[1]
        let socketPath = arguments[2]
        let reportPath = arguments[3]
        let lines = LineCollector()
        var report = VFIOCheckReport { line in
            if line.hasPrefix("  info: ") {
                KernelTestSupport.printLine("  info: [\(role)] " + line.dropFirst(8))
            } else {
                lines.append(line)
            }
        }
        var device: KernelVFIODevice?
        report.run((role == "source" ? KernelCheck.migrationSourceOpen : .migrationDestinationOpen).name) { c in
            device = try KernelEnvironment.open(uuid)
            c.expectEqual(try device?.deviceState(), .running, "state after open")
        }
        if let device {
            if role == "source" {
                runSource(device, socketPath: socketPath, report: &report, lines: lines)
            } else {
                runDestination(device, sourceUUID: arguments[4], socketPath: socketPath, report: &report, lines: lines)
            }
        }
        guard lines.write(to: reportPath) else {
            KernelTestSupport.printLine("  info: [\(role)] cannot write \(reportPath): errno \(errno)")
            return 1
        }
        return report.failed == 0 ? 0 : 1
    }

    private static func runSource(
        _ device: KernelVFIODevice, socketPath: String, report: inout VFIOCheckReport, lines: LineCollector
    ) {
        let handler = ObservingHandler(VFIOPCIHandler(device: device))
        let guest = FlagGuest(running: true)
        report.run(KernelCheck.migrationSource.name) { c in
            let (source, identity) = try EngineSupport.engine(MigrationSource.self, handler: handler, vm: guest)
            do {
                let statistics = try KernelTestSupport.wait {
                    try await source.run(to: PatientTransport(UnixSocketTransport(path: socketPath), timeout: .seconds(30)))
                }
                let entry = statistics.handlers.first { $0.identity == identity }
                c.expectEqual(entry?.ackState, .acknowledged, "the handler's switchover acknowledgement")
                c.expect(source.acknowledgement.acknowledged, "the switchover was not acknowledged")
                c.expectEqual(statistics.downtimeEnd, .destinationShut, "downtime measured to the destination's SHUT")
                c.note(
                    "\(entry?.sections ?? 0) sections, \(entry?.bytes ?? 0) handler bytes, \(statistics.bytesTransferred) bytes in all, "
                        + "\(statistics.iterations) iterations, extensions \(statistics.usedExtensions), "
                        + "downtime \(statistics.downtime.map { "\($0)" } ?? "-")")
            } catch {
                c.expect(false, "the migration failed: \(error)")
            }
            c.expectEqual(guest.calls, ["stop"], "the guest stopped once, at the switchover, and not resumed")
            c.note(handler.hookTrace)
            c.expectStates(
                of: handler,
                [
                    ("saveSetup", "PRE_COPY", "save setup"),
                    ("prepareRunStateChange(stop)", "PRE_COPY_P2P", "the stop's P2P step"),
                    ("runStateChanged(stop)", "STOP_COPY", "the guest stopped (the switchover)"),
                    ("saveComplete", "STOP_COPY", "save complete"),
                    ("saveCleanup", "STOP", "cleanup")
                ])
            let statistics = handler.inner.statistics
            c.expectEqual(statistics.preCopyBytes, UInt64(headerSize), "bytes sent in PRE_COPY")
            c.expectEqual(statistics.stopCopyBytes, UInt64(streamSize - headerSize), "bytes sent in STOP_COPY")
            c.expect(statistics.initDataSent, "INIT_DATA_SENT was not sent")
        }
        report.run(KernelCheck.migrationSourceReadback.name) { c in
            c.expectEqual(try device.deviceState(), .stop, "state after the migration")
            // STOP → STOP_COPY opens a fresh fd with the whole state.
            let bytes = try KernelTestSupport.readStateOut(device)
            c.expectEqual(bytes.count, streamSize, "state size")
            lines.append("state " + KernelTestSupport.hex(bytes))
        }
    }

    private static func runDestination(
        _ device: KernelVFIODevice, sourceUUID: String, socketPath: String, report: inout VFIOCheckReport,
        lines: LineCollector
    ) {
        // The default config state: QEMU's layout over the device's VFIO config region.
        let handler = ObservingHandler(VFIOPCIHandler(device: device))
        let guest = FlagGuest(running: false)
        report.run(KernelCheck.migrationDestination.name) { c in
            let (destination, identity) = try EngineSupport.engine(MigrationDestination.self, handler: handler, vm: guest)
            do {
                let statistics = try KernelTestSupport.wait { try await destination.run(from: UnixSocketTransport(path: socketPath)) }
                let entry = statistics.handlers.first { $0.identity == identity }
                c.expect(statistics.returnPathOpened, "the source did not open the return path")
                c.expectEqual(entry?.ackState, .acknowledged, "the handler's switchover acknowledgement")
                c.note(
                    "\(entry?.sections ?? 0) sections, \(entry?.bytes ?? 0) handler bytes, \(statistics.bytesTransferred) bytes in all, "
                        + "extensions \(statistics.usedExtensions)")
            } catch {
                c.expect(false, "the migration failed: \(error)")
            }
            c.expectEqual(guest.calls, ["resume"], "the guest resumed once, after loading")
            c.note(handler.hookTrace)
            let sections = handler.observations.map(\.hook).filter { $0.hasPrefix("loadState(") }
            c.expectEqual(sections.first, "loadState(start)", "first section")
            c.expectEqual(Array(sections.suffix(2)), ["loadState(end)", "loadState(full)"], "last sections")
            c.expect(sections.dropFirst().dropLast(2).allSatisfy { $0 == "loadState(part)" } && sections.count >= 4, "sections \(sections)")
            c.expectStates(
                of: handler,
                [
                    ("loadSetup", "RESUMING", "load setup"),
                    ("loadState(end)", "RESUMING", "the END section"),
                    ("loadComplete", "STOP", "load complete"),
                    ("prepareRunStateChange(start)", "RUNNING_P2P", "the start's P2P step"),
                    ("runStateChanged(start)", "RUNNING", "the guest started")
                ])
            let statistics = handler.inner.statistics
            c.expect(statistics.acknowledged, "the handler did not acknowledge the switchover")
            c.expectEqual(statistics.loadedBytes, UInt64(streamSize), "bytes written to the resume fd")
            let config = handler.inner.config as? QEMUPCIConfigState
            c.expect(config?.lastLoaded != nil, "the FULL section's config state did not reach the QEMU-layout config state")
        }
        report.run(KernelCheck.migrationDestinationReadback.name) { c in
            c.expectEqual(try device.deviceState(), .running, "state after the migration")
            let bytes = try KernelTestSupport.readStateOut(device)
            c.expectEqual(bytes.count, streamSize, "state size")
            lines.append("state " + KernelTestSupport.hex(bytes))
            // The config space as the load left it, for the parent's migration-config-state-restored.
            lines.append("config " + KernelTestSupport.hex(try device.readConfigSpace(offset: 0, count: MigrationRun.configBytes)))
        }
    }
}

/// The lines a child hands to the parent.
final class LineCollector {
    private(set) var lines: [String] = []

    func append(_ line: String) { lines.append(line) }

    /// Writes every line to `path`; false when that fails.
    func write(to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(lines.map { $0 + "\n" }.joined().utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// The lines of a file another process wrote; nil when it cannot be read.
    static func read(from path: String) -> [String]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}
#endif
