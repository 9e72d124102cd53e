import MigrationStream

/// Where and why a migration failed: the phase, and where relevant the handler, the section
/// and the stream offset, with the underlying error.
public struct MigrationFailure: Sendable, CustomStringConvertible {
    /// The phase the engine was in.
    public var phase: MigrationPhase
    /// The handler whose hook or section failed, if one did.
    public var handler: HandlerIdentity?
    /// The section being written or read, if any.
    public var section: SectionHeader?
    /// The stream offset (bytes written by the source, read by the destination).
    public var offset: Int?
    /// What went wrong, in words.
    public var message: String
    /// The error that caused it (a handler's, a ``/MigrationStream/StreamError``, a ``TransportError``…).
    public var underlying: (any Error)?

    public init(phase: MigrationPhase, handler: HandlerIdentity? = nil, section: SectionHeader? = nil,
                offset: Int? = nil, message: String, underlying: (any Error)? = nil) {
        self.phase = phase
        self.handler = handler
        self.section = section
        self.offset = offset
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        var parts = ["\(message) (phase \(phase)"]
        if let handler { parts.append("handler \(handler)") }
        if let section { parts.append("\(section.kind) section \(section.sectionID)") }
        if let offset { parts.append("offset \(offset)") }
        var text = parts.joined(separator: ", ") + ")"
        if let underlying { text += ": \(underlying)" }
        return text
    }
}

/// Which timeout of ``MigrationParameters`` expired.
public enum MigrationTimeout: String, Sendable, Hashable {
    /// ``MigrationParameters/stallTimeout``: nothing moved.
    case stall
    /// ``MigrationParameters/switchoverTimeout``: the acknowledgement never came.
    case switchoverAck
    /// ``MigrationParameters/minimumReceiveRate``: the peer trickled bytes too slowly.
    case tooSlow
}

/// Why a migration failed: one case per kind of failure, each carrying the phase and the
/// cause (cloud-hypervisor style).
public enum MigrationError: Error, Sendable, CustomStringConvertible {
    /// The parameters or the engine's use are inconsistent (e.g. switchover-ack without a
    /// return path, `run` called twice). Nothing was sent.
    case invalidParameters(String)
    /// Connecting, listening or accepting failed.
    case transport(MigrationFailure)
    /// Source: header, `savePrepare`, START sections. Destination: header, configuration
    /// (machine type mismatch…), `loadSetup`.
    case setup(MigrationFailure)
    /// The pre-flight check refused the migration (extensions); the message is the diff.
    case preflight(MigrationFailure)
    /// Source: the live phase (a PART section, a pending query, writing).
    case iterate(MigrationFailure)
    /// Source: stopping the guest, END/FULL sections, EOF. Destination: after EOF.
    case complete(MigrationFailure)
    /// Destination: a record or section could not be dispatched or loaded (unknown section,
    /// newer version, bad footer, truncated stream…).
    case load(MigrationFailure)
    /// Source: the return path failed (closed, malformed message).
    case returnPath(MigrationFailure)
    /// Source: the destination reported failure (SHUT with a non-zero value).
    case destinationFailed(MigrationFailure)
    /// A timeout of ``MigrationParameters`` expired.
    case timeout(MigrationTimeout, MigrationFailure)
    /// Source, with ``MigrationParameters/abortWhenNotConverging``: the pending data stopped
    /// shrinking for ``MigrationParameters/convergenceWindow``. The guest was never stopped.
    case notConverging(MigrationFailure)
    /// ``MigrationSource/cancel()``/``MigrationDestination/cancel()`` or task cancellation.
    case cancelled(MigrationFailure)

    /// The details, nil only for ``invalidParameters(_:)``.
    public var failure: MigrationFailure? {
        switch self {
        case .invalidParameters: nil
        case .transport(let f), .setup(let f), .preflight(let f), .iterate(let f), .complete(let f),
             .load(let f), .returnPath(let f), .destinationFailed(let f), .timeout(_, let f), .notConverging(let f),
             .cancelled(let f):
            f
        }
    }

    /// The phase the engine was in when it failed (``MigrationPhase/idle`` for invalid parameters).
    public var phase: MigrationPhase { failure?.phase ?? .idle }

    /// A short name of the case.
    public var kind: String {
        switch self {
        case .invalidParameters: "invalid parameters"
        case .transport: "transport"
        case .setup: "setup"
        case .preflight: "pre-flight"
        case .iterate: "iterate"
        case .complete: "complete"
        case .load: "load"
        case .returnPath: "return path"
        case .destinationFailed: "destination failed"
        case .timeout(.stall, _): "stall timeout"
        case .timeout(.switchoverAck, _): "switchover timeout"
        case .timeout(.tooSlow, _): "too-slow peer"
        case .notConverging: "not converging"
        case .cancelled: "cancelled"
        }
    }

    public var description: String {
        if case .invalidParameters(let text) = self { return "invalid parameters: \(text)" }
        return "migration \(kind) error: \(failure.map { "\($0)" } ?? "")"
    }
}
