// The reference's state tables, transcribed as text from shared/reference/vfio-uapi-spec.md §2.3–2.4,
// so tests check the module against the document rather than against itself.
import Testing
import VFIO

enum ReferenceTable {
    static let abbreviations: [String: VFIODeviceState] = [
        "S": .stop, "R": .running, "SC": .stopCopy, "RS": .resuming, "RP": .runningP2P, "PC": .preCopy,
        "PCP": .preCopyP2P, "ERR": .error
    ]

    /// §2.3, row = current, columns STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P.
    static let nextStepRows: [(VFIODeviceState, String)] = [
        (.stop, "· RP SC RS RP RP RP"),
        (.running, "RP · RP RP RP PC RP"),
        (.preCopy, "R R PCP R R · PCP"),
        (.preCopyP2P, "RP RP SC RP RP PC ·"),
        (.stopCopy, "S S · S S ERR ERR"),
        (.resuming, "S S S · S S S"),
        (.runningP2P, "S R S S · R PCP")
    ]
    static let columns: [VFIODeviceState] = [.stop, .running, .stopCopy, .resuming, .runningP2P, .preCopy, .preCopyP2P]

    /// The table entry for (current, requested); ERROR's row is all ERROR.
    static func entry(_ current: VFIODeviceState, _ requested: VFIODeviceState) -> VFIODeviceState {
        guard current != .error, requested != .error,
            let row = nextStepRows.first(where: { $0.0 == current }),
            let column = columns.firstIndex(of: requested)
        else { return .error }
        let cell = row.1.split(separator: " ")[column]
        return cell == "·" ? current : abbreviations[String(cell)] ?? .error
    }

    /// The reference's algorithm (§2.3) over the transcribed table: nil = EINVAL.
    static func path(_ current: VFIODeviceState, _ requested: VFIODeviceState, _ flags: VFIOMigrationFlags) -> [VFIODeviceState]? {
        func supported(_ state: VFIODeviceState) -> Bool {
            switch state {
            case .error: false
            case .stop, .running, .stopCopy, .resuming: flags.contains(.stopCopy)
            case .runningP2P: flags.contains([.stopCopy, .p2p])
            case .preCopy: flags.contains([.stopCopy, .preCopy])
            case .preCopyP2P: flags.contains([.stopCopy, .p2p, .preCopy])
            }
        }
        guard supported(current), supported(requested) else { return nil }
        var steps: [VFIODeviceState] = []
        var state = current
        while state != requested {
            var next = entry(state, requested)
            while next != .error, !supported(next) { next = entry(next, requested) }
            if next == .error { return nil }
            steps.append(next)
            state = next
        }
        return steps
    }

    /// Whether a step opens a new data fd (the "[fd]" marks of §2.4).
    static func opensFD(_ from: VFIODeviceState, _ to: VFIODeviceState) -> Bool {
        [(VFIODeviceState.running, VFIODeviceState.preCopy), (.runningP2P, .preCopyP2P), (.stop, .stopCopy), (.stop, .resuming)]
            .contains { $0 == (from, to) }
    }

    /// §2.4's flags-7 matrix: rows = from, columns RUNNING RUNNING_P2P STOP STOP_COPY RESUMING PRE_COPY PRE_COPY_P2P.
    static let flags7Columns: [VFIODeviceState] = [.running, .runningP2P, .stop, .stopCopy, .resuming, .preCopy, .preCopyP2P]
    static let flags7Rows: [(VFIODeviceState, [String])] = [
        (.running, ["·", "RP", "RP,S", "RP,S,SC[fd]", "RP,S,RS[fd]", "PC[fd]", "RP,PCP[fd]"]),
        (.runningP2P, ["R", "·", "S", "S,SC[fd]", "S,RS[fd]", "R,PC[fd]", "PCP[fd]"]),
        (.stop, ["RP,R", "RP", "·", "SC[fd]", "RS[fd]", "RP,R,PC[fd]", "RP,PCP[fd]"]),
        (.stopCopy, ["S,RP,R", "S,RP", "S", "·", "S,RS[fd]", "EINVAL", "EINVAL"]),
        (.resuming, ["S,RP,R", "S,RP", "S", "S,SC[fd]", "·", "S,RP,R,PC[fd]", "S,RP,PCP[fd]"]),
        (.preCopy, ["R", "R,RP", "R,RP,S", "PCP,SC", "R,RP,S,RS[fd]", "·", "PCP"]),
        (.preCopyP2P, ["RP,R", "RP", "RP,S", "SC", "RP,S,RS[fd]", "PC", "·"])
    ]

    /// §2.4's listed paths for flags 1, 3 and 5: (flags, from, to, path).
    static let listedPaths: [(VFIOMigrationFlags, VFIODeviceState, VFIODeviceState, String)] = [
        ([.stopCopy], .running, .stopCopy, "S,SC[fd]"),
        ([.stopCopy], .running, .resuming, "S,RS[fd]"),
        ([.stopCopy], .stopCopy, .running, "S,R"),
        ([.stopCopy], .resuming, .running, "S,R"),
        ([.stopCopy], .stopCopy, .resuming, "S,RS[fd]"),
        ([.stopCopy], .resuming, .stopCopy, "S,SC[fd]"),
        ([.stopCopy, .p2p], .running, .stop, "RP,S"),
        ([.stopCopy, .p2p], .running, .stopCopy, "RP,S,SC[fd]"),
        ([.stopCopy, .p2p], .running, .resuming, "RP,S,RS[fd]"),
        ([.stopCopy, .p2p], .stop, .running, "RP,R"),
        ([.stopCopy, .p2p], .stopCopy, .running, "S,RP,R"),
        ([.stopCopy, .p2p], .resuming, .running, "S,RP,R"),
        ([.stopCopy, .p2p], .runningP2P, .stopCopy, "S,SC[fd]"),
        ([.stopCopy, .p2p], .runningP2P, .resuming, "S,RS[fd]"),
        ([.stopCopy, .preCopy], .running, .preCopy, "PC[fd]"),
        ([.stopCopy, .preCopy], .preCopy, .stopCopy, "SC"),
        ([.stopCopy, .preCopy], .preCopy, .stop, "R,S"),
        ([.stopCopy, .preCopy], .stop, .preCopy, "R,PC[fd]"),
        ([.stopCopy, .preCopy], .resuming, .preCopy, "S,R,PC[fd]"),
        ([.stopCopy, .preCopy], .preCopy, .resuming, "R,S,RS[fd]"),
        ([.stopCopy, .preCopy], .stopCopy, .preCopy, "EINVAL")
    ]

    /// Parses "RP,S,SC[fd]" into steps and whether the last one opens an fd; nil for "EINVAL".
    static func parse(_ text: String) -> (steps: [VFIODeviceState], fd: Bool)? {
        if text == "EINVAL" { return nil }
        if text == "·" { return ([], false) }
        var fd = false
        let steps = text.split(separator: ",").map { part -> VFIODeviceState in
            var name = String(part)
            if name.hasSuffix("[fd]") {
                fd = true
                name.removeLast(4)
            }
            return abbreviations[name] ?? .error
        }
        return (steps, fd)
    }
}

/// One (flags, current, requested) triple.
struct TransitionCase: Sendable, CustomTestStringConvertible {
    let flags: VFIOMigrationFlags
    let from: VFIODeviceState
    let to: VFIODeviceState

    var testDescription: String { "flags \(flags.rawValue): \(from)→\(to)" }

    /// Every pair of states (ERROR included as a request) for every defined flag set.
    static let all: [TransitionCase] = VFIOMigrationFlags.definedCombinations.flatMap { flags in
        flags.supportedStates.flatMap { from in VFIODeviceState.allCases.map { TransitionCase(flags: flags, from: from, to: $0) } }
    }
}
