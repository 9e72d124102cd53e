// The reference's flags-7 table (shared/reference/vfio-uapi-spec.md §2.4: STOP_COPY | P2P | PRE_COPY),
// transcribed as text so the behaviour checks compare devices with the document, not with
// `VFIOMigrationFSM` (which the simulator itself uses).

/// What the reference says one SET does on a flags-7 device.
enum VFIOFlags7Outcome: Equatable, CustomStringConvertible {
    /// Requesting the current state: success, no fd.
    case noop
    /// Refused at once with EINVAL, state unchanged.
    case einval
    /// The arcs walked, ending at the requested state; `newFD` when the last arc opens a session.
    case path([VFIODeviceState], newFD: Bool)

    var description: String {
        switch self {
        case .noop: "no-op"
        case .einval: "EINVAL"
        case .path(let steps, let newFD):
            steps.map { VFIOFlags7Reference.abbreviation($0) }.joined(separator: ",") + (newFD ? "[fd]" : "")
        }
    }

    var isRefusal: Bool { self == .einval }
}

enum VFIOFlags7Reference {
    /// The requestable states, in the table's column order.
    static let columns: [VFIODeviceState] = [.running, .runningP2P, .stop, .stopCopy, .resuming, .preCopy, .preCopyP2P]

    /// §2.4, flags 7; row = current state, columns as `columns`.
    static let rows: [(VFIODeviceState, String)] = [
        (.running, "· | RP | RP,S | RP,S,SC[fd] | RP,S,RS[fd] | PC[fd] | RP,PCP[fd]"),
        (.runningP2P, "R | · | S | S,SC[fd] | S,RS[fd] | R,PC[fd] | PCP[fd]"),
        (.stop, "RP,R | RP | · | SC[fd] | RS[fd] | RP,R,PC[fd] | RP,PCP[fd]"),
        (.stopCopy, "S,RP,R | S,RP | S | · | S,RS[fd] | EINVAL | EINVAL"),
        (.resuming, "S,RP,R | S,RP | S | S,SC[fd] | · | S,RP,R,PC[fd] | S,RP,PCP[fd]"),
        (.preCopy, "R | R,RP | R,RP,S | PCP,SC (same fd) | R,RP,S,RS[fd] | · | PCP"),
        (.preCopyP2P, "RP,R | RP | RP,S | SC (same fd) | RP,S,RS[fd] | PC | ·")
    ]

    private static let abbreviations: [String: VFIODeviceState] = [
        "R": .running, "RP": .runningP2P, "S": .stop, "SC": .stopCopy, "RS": .resuming, "PC": .preCopy, "PCP": .preCopyP2P
    ]

    static func abbreviation(_ state: VFIODeviceState) -> String {
        abbreviations.first { $0.value == state }?.key ?? "E"
    }

    /// The table's cell for (current, requested); nil for a pair outside the table (ERROR).
    static func outcome(from current: VFIODeviceState, to requested: VFIODeviceState) -> VFIOFlags7Outcome? {
        guard let row = rows.first(where: { $0.0 == current })?.1, let column = columns.firstIndex(of: requested) else {
            return nil
        }
        let cells = row.split(separator: "|").map { $0.trimmingCharacters() }
        guard column < cells.count else { return nil }
        let cell = cells[column]
        if cell == "·" { return .noop }
        if cell == "EINVAL" { return .einval }
        let newFD = cell.hasSuffix("[fd]")
        let list = cell.split(separator: " ").first.map(String.init) ?? cell
        let names = list.replacingSuffix("[fd]").split(separator: ",").map(String.init)
        let steps = names.compactMap { abbreviations[$0] }
        guard steps.count == names.count, steps.last == requested else { return nil }
        return .path(steps, newFD: newFD)
    }

    /// Whether a data fd held in `current` is still live after a successful move to `requested`: only
    /// while the device stays inside the saving group (§2.6).
    static func keepsSession(from current: VFIODeviceState, to requested: VFIODeviceState) -> Bool {
        current == requested || (current.isSaving && requested.isSaving)
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }

    fileprivate func replacingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : String(self)
    }
}
