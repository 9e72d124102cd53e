/// Where a migration is. Both engines report it in progress events and errors.
///
/// ```text
///  source                                   destination
///
///  idle ─▶ connecting ─▶ header              idle ─▶ connecting ─▶ header
///                          │                                         │
///                          ▼                                         ▼
///                      preflight (ext.)                            setup
///                          │                                         │
///                          ▼                                         ▼
///                        setup                                    loading ◀─┐ sections,
///                          │                                         │      │ commands
///                          ▼                                         ├──────┘
///                      iterating ◀─┐ PART passes,                    ▼ EOF
///                          │       │ waiting for the ack          resuming
///                          ├───────┘                                 │
///                          ▼ decision: switch over                   ▼
///                      completing  (guest stopped: END, FULL, EOF)  completed
///                          │
///                          ▼
///                      finishing   (waiting for the destination's SHUT)
///                          │
///                          ▼
///                      completed
///
///  any phase ──error──▶ failed        any phase ──cancel──▶ cancelled
/// ```
public enum MigrationPhase: String, Sendable, Hashable, CustomStringConvertible {
    /// Not started.
    case idle
    /// Connecting (source) or waiting for the incoming connection (destination).
    case connecting
    /// Writing or reading the file header, configuration and opening commands.
    case header
    /// Source: waiting for the destination's answer to the pre-flight check (extensions).
    case preflight
    /// Source: START sections. Destination: `loadSetup` of every handler.
    case setup
    /// Source: the live phase: PART passes and the switchover decision.
    case iterating
    /// Source: the guest is stopped; END and FULL sections, EOF.
    case completing
    /// Source: the stream is written; waiting for the destination's verdict (SHUT).
    case finishing
    /// Destination: dispatching sections and commands until EOF.
    case loading
    /// Destination: EOF read; starting the guest.
    case resuming
    /// Done, successfully.
    case completed
    /// Done, with an error.
    case failed
    /// Done, cancelled.
    case cancelled

    public var description: String { rawValue }
}
