import CLISupport
import ExampleVM
import MigrationCore
import VFIO

/// The final statistics of `migrate` and `incoming`, as text or as one JSON object.
enum Report {
    // MARK: Text

    static func sourceText(_ s: MigrationStatistics, address: String, parameters: MigrationParameters, digests: MachineDigests) -> String {
        var lines = ["migrated to \(address) in \(Units.duration(s.totalTime))"]
        if let downtime = s.downtime {
            let end = s.downtimeEnd == .destinationShut ? "guest stop to the destination's SHUT" : "guest stop to EOF sent (no return path)"
            lines.append(field("downtime", "\(Units.duration(downtime)) (\(end)); limit \(Units.duration(parameters.downtimeLimit))"))
        } else {
            lines.append(field("downtime", "none: the guest was not running"))
        }
        if let decision = s.decision {
            var predicted = decision.predictedDowntime.map { Units.duration($0) } ?? "unknown"
            predicted += decision.countedDestinationLoadTime ? " (counting the destination's load time)" : ""
            if let qemu = decision.predictedDowntimeQEMU { predicted += "; QEMU's formula (pending / bandwidth) \(Units.duration(qemu))" }
            lines.append(field("predicted", predicted))
            if let p = decision.prediction {
                lines.append(
                    field(
                        "prediction",
                        "transfer \(Units.duration(p.transfer)) + destination backlog \(Units.duration(p.destinationBacklog)) "
                            + "+ final load \(Units.duration(p.finalLoad))"))
            }
            lines.append(
                field(
                    "decision",
                    "\(Units.bytes(decision.pendingBytes)) pending at \(Units.rate(decision.bandwidth)), threshold \(Units.bytes(decision.thresholdBytes))"
                ))
        }
        var transferred = "\(Units.bytes(s.bytesTransferred)) in \(s.iterations) passes; setup \(Units.duration(s.setupTime))"
        if s.multifdChannels > 0 { transferred += "; \(Units.bytes(s.multifdBytes)) more over \(s.multifdChannels) multifd channels" }
        lines.append(field("transferred", transferred))
        lines.append(field("device DMA", dirtyTrackingText(s.dirtyTracking)))
        lines.append(field("switchover-ack", ackSummary(s.handlers, enabled: parameters.switchoverAck)))
        lines.append(field("extensions", s.usedExtensions ? "used (pre-flight, load reports, per-device acks)" : "not used"))
        return withHandlersAndDigests(lines, s.handlers, digests, heading: "digests of what left (compare with the destination's):")
    }

    static func incomingText(_ s: IncomingStatistics, address: String, digests: MachineDigests) -> String {
        var lines = ["received on \(address) in \(Units.duration(s.totalTime)); the guest runs here now"]
        lines.append(field("machine", s.configuration.machineType))
        lines.append(
            field(
                "transferred",
                Units.bytes(s.bytesTransferred)
                    + (s.multifdChannels > 0 ? " (main stream), with \(s.multifdChannels) multifd channels" : "")))
        lines.append(field("resume", "\(Units.duration(s.resumeTime)) from EOF to the guest running"))
        lines.append(field("return path", s.returnPathOpened ? "opened" : "not opened"))
        lines.append(field("extensions", s.usedExtensions ? "used" : "not used"))
        return withHandlersAndDigests(lines, s.handlers, digests, heading: "digests of what arrived (compare with the source's):")
    }

    /// A report's `lines`, then its handler table and its digests, as one text.
    static func withHandlersAndDigests(
        _ lines: [String], _ handlers: [HandlerStatistics], _ digests: MachineDigests, heading: String
    ) -> String {
        (lines + [""] + handlerTable(handlers) + [""] + digestLines(digests, heading: heading)).joined(separator: "\n")
    }

    /// How the pages devices wrote by DMA were tracked, in one line.
    static func dirtyTrackingText(_ t: DirtyTrackingStatistics?) -> String {
        guard let t else { return "no device writes guest memory by DMA (nothing tracked)" }
        let syncs = t.pagesPerSync.count
        var text =
            "\(t.kind.rawValue) (\(t.trackerCount) tracker\(t.trackerCount == 1 ? "" : "s"): \(t.trackers.joined(separator: ", "))); "
        text += "\(t.pagesPerSync.reduce(0, +)) pages reported in \(syncs) sync\(syncs == 1 ? "" : "s"), "
        text += "\(t.finalSyncPages.map(String.init) ?? "none") in the final sync"
        if t.kind == .allMappedDirty { text += " (every mapped page counts at every sync: " + t.reasons.joined(separator: "; ") + ")" }
        return text
    }

    static func dirtyTrackingJSON(_ t: DirtyTrackingStatistics?) -> JSONValue {
        guard let t else { return .null }
        return .object([
            ("kind", .string(t.kind.rawValue)),
            ("trackers", .array(t.trackers.map { .string($0) })),
            ("pagesPerSync", .array(t.pagesPerSync.map { .int($0) })),
            ("finalSyncPages", t.finalSyncPages.map { .int($0) } ?? .null),
            ("reasons", .array(t.reasons.map { .string($0) }))
        ])
    }

    private static func field(_ name: String, _ value: String) -> String {
        "  " + name + String(repeating: " ", count: max(1, 16 - name.count)) + value
    }

    private static func ackSummary(_ handlers: [HandlerStatistics], enabled: Bool) -> String {
        guard enabled else { return "off" }
        let needing = handlers.filter { $0.ackState != .notNeeded }
        if needing.isEmpty { return "on; no device needed an acknowledgement" }
        let states = needing.map { "\($0.identity.idstr) \($0.ackState.rawValue)" }
        return "on; " + states.joined(separator: ", ")
    }

    private static func handlerTable(_ handlers: [HandlerStatistics]) -> [String] {
        var rows = [["HANDLER", "BYTES", "SECTIONS", "LOADED", "LOAD TIME", "ACK"]]
        for h in handlers {
            rows.append([
                h.identity.idstr, Units.bytes(h.bytes), String(h.sections),
                h.bytesLoaded.map(Units.bytes) ?? "-", h.loadTime.map(Units.duration) ?? "-", h.ackState.rawValue
            ])
        }
        return table(rows, rightAligned: [1, 2, 3, 4]).map { "  " + $0 }
    }

    private static func digestLines(_ digests: MachineDigests, heading: String) -> [String] {
        var rows = [["ram", MachineDigests.hex(digests.ram)]]
        for d in digests.devices { rows.append([d.name, d.stream?.description ?? "no session"]) }
        return ["  " + heading] + table(rows, rightAligned: []).map { "    " + $0 }
    }

    /// Columns padded to their widest cell, two spaces apart.
    static func table(_ rows: [[String]], rightAligned: Set<Int>) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            var line = ""
            for (i, cell) in row.enumerated() {
                let fill = String(repeating: " ", count: widths[i] - cell.count)
                line += (i == 0 ? "" : "  ") + (rightAligned.contains(i) ? fill + cell : cell + (i == row.count - 1 ? "" : fill))
            }
            return line
        }
    }

    // MARK: JSON

    static func ms(_ d: Duration?) -> JSONValue { .optional(d.map(Units.milliseconds)) }

    /// The switchover decision's predicted downtime and its parts, each with its key in
    /// `migrate --json` and `demo --json` (in milliseconds there) and its column in `demo`'s
    /// table (nil: not shown there).
    static let predictions: [(key: String, column: String?, of: @Sendable (SwitchoverDecision) -> Duration?)] = [
        ("predictedDowntimeMs", "PREDICTED", { $0.predictedDowntime }),
        ("predictedDowntimeQEMUMs", nil, { $0.predictedDowntimeQEMU }),
        ("predictedTransferMs", "= TRANSFER", { $0.prediction?.transfer }),
        ("predictedBacklogMs", "+ BACKLOG", { $0.prediction?.destinationBacklog }),
        ("predictedFinalLoadMs", "+ FINAL LOAD", { $0.prediction?.finalLoad })
    ]

    /// ``predictions`` of one decision (null members when there was none).
    static func predictionsJSON(_ decision: SwitchoverDecision?) -> [(String, JSONValue)] {
        predictions.map { ($0.key, ms(decision.flatMap($0.of))) }
    }

    static func sourceJSON(_ s: MigrationStatistics, address: String, parameters: MigrationParameters, digests: MachineDigests) -> JSONValue
    {
        .object(
            [
                ("role", .string("source")),
                ("address", .string(address)),
                ("switchoverAck", .bool(parameters.switchoverAck)),
                ("downtimeLimitMs", ms(parameters.downtimeLimit)),
                ("totalMs", ms(s.totalTime)),
                ("setupMs", ms(s.setupTime)),
                ("downtimeMs", ms(s.downtime)),
                ("downtimeEnd", .string(s.downtimeEnd.rawValue))
            ] + predictionsJSON(s.decision) + [
                ("countedDestinationLoadTime", .bool(s.decision?.countedDestinationLoadTime ?? false)),
                ("pendingAtDecision", s.decision.map { .int($0.pendingBytes) } ?? .null),
                ("bandwidthAtDecision", .optional(s.decision?.bandwidth)),
                ("bytes", .int(s.bytesTransferred)),
                ("iterations", .int(s.iterations)),
                ("rateLimitWaits", .int(s.rateLimitWaits)),
                ("usedExtensions", .bool(s.usedExtensions)),
                ("multifdChannels", .int(s.multifdChannels)),
                ("multifdBytes", .int(s.multifdBytes)),
                ("dirtyTracking", dirtyTrackingJSON(s.dirtyTracking)),
                ("handlers", .array(s.handlers.map(handlerJSON))),
                ("digests", digestsJSON(digests))
            ])
    }

    static func incomingJSON(_ s: IncomingStatistics, address: String, digests: MachineDigests) -> JSONValue {
        .object([
            ("role", .string("destination")),
            ("address", .string(address)),
            ("machineType", .string(s.configuration.machineType)),
            ("totalMs", ms(s.totalTime)),
            ("resumeMs", ms(s.resumeTime)),
            ("bytes", .int(s.bytesTransferred)),
            ("returnPathOpened", .bool(s.returnPathOpened)),
            ("usedExtensions", .bool(s.usedExtensions)),
            ("multifdChannels", .int(s.multifdChannels)),
            ("handlers", .array(s.handlers.map(handlerJSON))),
            ("digests", digestsJSON(digests))
        ])
    }

    static func handlerJSON(_ h: HandlerStatistics) -> JSONValue {
        .object([
            ("idstr", .string(h.identity.idstr)),
            ("instanceID", .int(Int(h.identity.instanceID))),
            ("versionID", .int(Int(h.identity.versionID))),
            ("bytes", .int(h.bytes)),
            ("sections", .int(h.sections)),
            ("bytesLoaded", h.bytesLoaded.map { .int($0) } ?? .null),
            ("loadMs", ms(h.loadTime)),
            ("ack", .string(h.ackState.rawValue))
        ])
    }

    static func digestsJSON(_ d: MachineDigests) -> JSONValue {
        .object([
            ("ram", .string(MachineDigests.hex(d.ram))),
            (
                "devices",
                .array(
                    d.devices.map { device in
                        .object([
                            ("name", .string(device.name)),
                            ("kind", .string(device.kind.rawValue)),
                            ("bytes", device.stream.map { .int($0.byteCount) } ?? .null),
                            ("hash", device.stream.map { .string(MachineDigests.hex($0.hash)) } ?? .null)
                        ])
                    })
            )
        ])
    }
}
