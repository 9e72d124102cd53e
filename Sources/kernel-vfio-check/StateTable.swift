// What the reference (§2.4, the flags-7 table: STOP_COPY | P2P | PRE_COPY) says every
// (current, requested) pair does. The kernel only shows the outcome: success or errno, whether a new
// data fd came back, and the state GET reports afterwards. The full path is kept for the report and
// for the simulator comparison.

enum ExpectedTransition: CustomStringConvertible {
    /// Requesting the current state: success, no fd.
    case noop
    /// The single arcs the core walks, in order, ending at the requested state.
    case path([MigState])
    /// Refused at once with EINVAL (state unchanged).
    case einval

    var description: String {
        switch self {
        case .noop: "no-op"
        case .einval: "EINVAL"
        case .path(let steps): steps.map(\.short).joined(separator: ",")
        }
    }
}

extension MigState {
    /// The abbreviations the reference's tables use.
    var short: String {
        switch self {
        case .error: "E"
        case .stop: "S"
        case .running: "R"
        case .stopCopy: "SC"
        case .resuming: "RS"
        case .runningP2P: "RP"
        case .preCopy: "PC"
        case .preCopyP2P: "PCP"
        }
    }
}

/// The arcs that open a new data fd (spec §2.2).
func arcCreatesFD(from: MigState, to: MigState) -> Bool {
    switch (from, to) {
    case (.running, .preCopy), (.runningP2P, .preCopyP2P), (.stop, .stopCopy), (.stop, .resuming): true
    default: false
    }
}

enum StateTable {
    /// §2.4, flags 7, row = current state, column = requested state.
    static func expected(from: MigState, to: MigState) -> ExpectedTransition {
        if from == to { return .noop }
        let R = MigState.running, RP = MigState.runningP2P, S = MigState.stop, SC = MigState.stopCopy
        let RS = MigState.resuming, PC = MigState.preCopy, PCP = MigState.preCopyP2P
        switch (from, to) {
        case (.running, .runningP2P): return .path([RP])
        case (.running, .stop): return .path([RP, S])
        case (.running, .stopCopy): return .path([RP, S, SC])
        case (.running, .resuming): return .path([RP, S, RS])
        case (.running, .preCopy): return .path([PC])
        case (.running, .preCopyP2P): return .path([RP, PCP])

        case (.runningP2P, .running): return .path([R])
        case (.runningP2P, .stop): return .path([S])
        case (.runningP2P, .stopCopy): return .path([S, SC])
        case (.runningP2P, .resuming): return .path([S, RS])
        case (.runningP2P, .preCopy): return .path([R, PC])
        case (.runningP2P, .preCopyP2P): return .path([PCP])

        case (.stop, .running): return .path([RP, R])
        case (.stop, .runningP2P): return .path([RP])
        case (.stop, .stopCopy): return .path([SC])
        case (.stop, .resuming): return .path([RS])
        case (.stop, .preCopy): return .path([RP, R, PC])
        case (.stop, .preCopyP2P): return .path([RP, PCP])

        case (.stopCopy, .running): return .path([S, RP, R])
        case (.stopCopy, .runningP2P): return .path([S, RP])
        case (.stopCopy, .stop): return .path([S])
        case (.stopCopy, .resuming): return .path([S, RS])
        case (.stopCopy, .preCopy), (.stopCopy, .preCopyP2P): return .einval

        case (.resuming, .running): return .path([S, RP, R])
        case (.resuming, .runningP2P): return .path([S, RP])
        case (.resuming, .stop): return .path([S])
        case (.resuming, .stopCopy): return .path([S, SC])
        case (.resuming, .preCopy): return .path([S, RP, R, PC])
        case (.resuming, .preCopyP2P): return .path([S, RP, PCP])

        case (.preCopy, .running): return .path([R])
        case (.preCopy, .runningP2P): return .path([R, RP])
        case (.preCopy, .stop): return .path([R, RP, S])
        case (.preCopy, .stopCopy): return .path([PCP, SC])
        case (.preCopy, .resuming): return .path([R, RP, S, RS])
        case (.preCopy, .preCopyP2P): return .path([PCP])

        case (.preCopyP2P, .running): return .path([RP, R])
        case (.preCopyP2P, .runningP2P): return .path([RP])
        case (.preCopyP2P, .stop): return .path([RP, S])
        case (.preCopyP2P, .stopCopy): return .path([SC])
        case (.preCopyP2P, .resuming): return .path([RP, S, RS])
        case (.preCopyP2P, .preCopy): return .path([PC])

        default: return .einval  // ERROR, never requestable
        }
    }

    /// Whether the request hands back a new data fd: its last arc creates one.
    static func returnsNewFD(from: MigState, _ expected: ExpectedTransition) -> Bool {
        guard case .path(let steps) = expected, let last = steps.last else { return false }
        let previous = steps.count >= 2 ? steps[steps.count - 2] : from
        return arcCreatesFD(from: previous, to: last)
    }

    /// Whether a data fd held in `from` stays alive after a successful transition to `to`:
    /// only while the device stays inside the saving group (or does not move).
    static func keepsSession(from: MigState, to: MigState) -> Bool {
        from == to || (from.isSaving && to.isSaving)
    }
}
