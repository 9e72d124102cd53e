// The kernel's migration state machine (drivers/vfio/vfio_main.c vfio_mig_get_next_state), restated
// from shared/reference/vfio-uapi-spec.md §2.3: a next-step table plus a skip loop over unsupported states.

/// The VFIO migration finite state machine: which single arcs a device takes to reach a requested state.
public enum VFIOMigrationFSM {
    /// Row = current state, column = requested state; entry = the next single step before skipping.
    /// Indexed by raw value; the ERROR row and column are all ERROR.
    private static let table: [[VFIODeviceState]] = {
        typealias S = VFIODeviceState
        let e = S.error
        // Columns:       ERROR  STOP         RUNNING      STOP_COPY    RESUMING     RUNNING_P2P  PRE_COPY     PRE_COPY_P2P
        return [
            /* ERROR */ [e, e, e, e, e, e, e, e],
            /* STOP */ [e, .stop, .runningP2P, .stopCopy, .resuming, .runningP2P, .runningP2P, .runningP2P],
            /* RUNNING */ [e, .runningP2P, .running, .runningP2P, .runningP2P, .runningP2P, .preCopy, .runningP2P],
            /* STOP_COPY */ [e, .stop, .stop, .stopCopy, .stop, .stop, e, e],
            /* RESUMING */ [e, .stop, .stop, .stop, .resuming, .stop, .stop, .stop],
            /* RUNNING_P2P */ [e, .stop, .running, .stop, .stop, .runningP2P, .running, .preCopyP2P],
            /* PRE_COPY */ [e, .running, .running, .preCopyP2P, .running, .running, .preCopy, .preCopyP2P],
            /* PRE_COPY_P2P */ [e, .runningP2P, .runningP2P, .stopCopy, .runningP2P, .runningP2P, .preCopy, .preCopyP2P]
        ]
    }()

    /// The raw next-step table entry, before skipping states the device lacks.
    public static func tableEntry(from current: VFIODeviceState, to requested: VFIODeviceState) -> VFIODeviceState {
        table[Int(current.rawValue)][Int(requested.rawValue)]
    }

    /// The next single arc's target on a device with `flags`, or nil when the kernel answers EINVAL
    /// (requested state unsupported or ERROR, or no path such as STOP_COPY→PRE_COPY).
    /// Returns `current` when `current == requested`.
    public static func nextStep(
        from current: VFIODeviceState, to requested: VFIODeviceState, flags: VFIOMigrationFlags
    ) -> VFIODeviceState? {
        guard requested.isSupported(by: flags), current.isSupported(by: flags) else { return nil }
        if current == requested { return current }
        var next = tableEntry(from: current, to: requested)
        while next != .error, !next.isSupported(by: flags) {
            next = tableEntry(from: next, to: requested)
        }
        return next == .error ? nil : next
    }

    /// Every single step from `current` to `requested` (excluding `current`), or nil for EINVAL.
    /// An empty path means `current == requested`.
    public static func path(
        from current: VFIODeviceState, to requested: VFIODeviceState, flags: VFIOMigrationFlags
    ) -> [VFIODeviceState]? {
        guard requested.isSupported(by: flags), current.isSupported(by: flags) else { return nil }
        var steps: [VFIODeviceState] = []
        var state = current
        while state != requested {
            guard let next = nextStep(from: state, to: requested, flags: flags), steps.count < 8 else { return nil }
            steps.append(next)
            state = next
        }
        return steps
    }

    /// Whether the single arc `from`→`to` opens a new data session (returns a new data fd):
    /// RUNNING→PRE_COPY, RUNNING_P2P→PRE_COPY_P2P, STOP→STOP_COPY, STOP→RESUMING.
    public static func arcOpensSession(from: VFIODeviceState, to: VFIODeviceState) -> Bool {
        switch (from, to) {
        case (.running, .preCopy), (.runningP2P, .preCopyP2P), (.stop, .stopCopy), (.stop, .resuming): true
        default: false
        }
    }

    /// Whether the single arc `from`→`to` ends the current data session (its fd then fails ENODEV):
    /// leaving the saving group for RUNNING, RUNNING_P2P or STOP, or leaving RESUMING.
    public static func arcEndsSession(from: VFIODeviceState, to: VFIODeviceState) -> Bool {
        (from.isSaving && !to.isSaving) || (from == .resuming && to != .resuming)
    }

    /// The requests a client must never send: STOP_COPY→PRE_COPY and STOP_COPY→PRE_COPY_P2P spin
    /// forever in kernels without the 2026 fix (reference §2.3).
    public static func isKernelHangRequest(from current: VFIODeviceState, to requested: VFIODeviceState) -> Bool {
        current == .stopCopy && requested.isPreCopy
    }
}
