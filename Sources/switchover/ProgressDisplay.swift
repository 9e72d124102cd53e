import ExampleVM
import MigrationCore

#if canImport(Glibc)
import Glibc
#endif

/// Live progress on standard error: on a terminal one line redrawn in place; otherwise a plain
/// line per second and at every phase change. Used from one task.
final class ProgressDisplay {
    enum Mode {
        case off
        /// A terminal: one line redrawn with `\r`.
        case redraw
        /// Not a terminal: a line per second and per phase change.
        case lines
    }

    let mode: Mode
    let role: ExampleMachine.Role
    let switchoverAck: Bool
    private var standardError = StandardError()
    private var lastLine: Duration?
    private var lastPhase: MigrationPhase?
    private var drawn = false

    init(enabled: Bool, role: ExampleMachine.Role, switchoverAck: Bool) {
        self.mode = !enabled ? .off : isatty(STDERR_FILENO) == 1 ? .redraw : .lines
        self.role = role
        self.switchoverAck = switchoverAck
    }

    func show(_ progress: MigrationProgress) {
        switch mode {
        case .off:
            return
        case .redraw:
            print("\r\u{1B}[K" + line(progress), terminator: "", to: &standardError)
            drawn = true
        case .lines:
            let due = lastLine.map { progress.elapsed - $0 >= .seconds(1) } ?? true
            guard due || progress.phase != lastPhase else { return }
            print(line(progress), to: &standardError)
            lastLine = progress.elapsed
        }
        lastPhase = progress.phase
    }

    /// Ends the redrawn line.
    func finish() {
        if mode == .redraw, drawn { print("", to: &standardError) }
        drawn = false
    }

    func line(_ p: MigrationProgress) -> String {
        var parts = [pad(p.phase.rawValue, 10), Units.duration(p.elapsed)]
        if role == .destination {
            parts.append(Units.bytes(p.bytesTransferred) + " received")
            return parts.joined(separator: "  ")
        }
        parts.append(Units.bytes(p.bytesTransferred) + " sent")
        parts.append(Units.bytes(p.pendingBytes) + " pending")
        parts.append(Units.rate(p.bandwidth))
        if let ours = p.predictedDowntime {
            var predicted = "downtime ~" + Units.duration(ours)
            if let qemu = p.predictedDowntimeQEMU, Units.duration(qemu) != Units.duration(ours) {
                predicted += " (QEMU's formula " + Units.duration(qemu) + ")"
            }
            parts.append(predicted)
        }
        parts.append(ackText(p))
        if !p.converging { parts.append("NOT CONVERGING") }
        return parts.joined(separator: "  ")
    }

    private func ackText(_ p: MigrationProgress) -> String {
        guard switchoverAck else { return "ack off" }
        if p.switchoverAcknowledged { return "ack: yes" }
        let waiting = p.handlers.filter { $0.ackState == .pending || $0.ackState == .revoked }.count
        return waiting > 0 ? "ack: waiting for \(waiting) device\(waiting == 1 ? "" : "s")" : "ack: waiting"
    }

    private func pad(_ s: String, _ width: Int) -> String {
        s + String(repeating: " ", count: max(0, width - s.count))
    }
}
