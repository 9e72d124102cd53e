import MigrationStream

/// Why, when and where a migration failed.
///
/// One error shape for every failure (after swift-nio NIOFS's `FileSystemError`): ``code`` says
/// *why* and is extensible (a new code never breaks a caller's `switch`), ``phase`` says *when*,
/// ``handler``, ``section`` and ``offset`` say *where*, and ``cause`` holds the error underneath
/// (a handler's, a ``/MigrationStream/StreamError``, a ``TransportError``, a ``MultifdError``…).
/// Match on ``code``; ``message`` is for people.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    /// Why the migration failed.
    public var code: Code
    /// What went wrong, in words.
    public var message: String
    /// The phase the engine was in (``MigrationPhase/idle`` for ``Code/invalidParameters``).
    public var phase: MigrationPhase
    /// The handler whose hook or section failed, if one did.
    public var handler: HandlerIdentity?
    /// The section being written or read, if any.
    public var section: SectionHeader?
    /// The stream offset (bytes written by the source, read by the destination).
    public var offset: Int?
    /// The error that caused it, if any.
    public var cause: (any Error)?

    public init(
        _ code: Code, phase: MigrationPhase, handler: HandlerIdentity? = nil, section: SectionHeader? = nil,
        offset: Int? = nil, message: String, cause: (any Error)? = nil
    ) {
        self.code = code
        self.phase = phase
        self.handler = handler
        self.section = section
        self.offset = offset
        self.message = message
        self.cause = cause
    }

    /// The parameters or the engine's use are inconsistent (e.g. switchover-ack without a
    /// return path, `run` called twice). Nothing was sent.
    public static func invalidParameters(_ message: String) -> MigrationError {
        MigrationError(.invalidParameters, phase: .idle, message: message)
    }

    public var description: String {
        var parts = ["migration \(code) error: \(message) (phase \(phase)"]
        if let handler { parts.append("handler \(handler)") }
        if let section { parts.append("\(section.kind) section \(section.sectionID)") }
        if let offset { parts.append("offset \(offset)") }
        var text = parts.joined(separator: ", ") + ")"
        if let cause { text += ": \(cause)" }
        return text
    }

    /// Why a migration failed. New codes may be added: a `switch` over codes needs a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: Hashable, Sendable {
            case invalidParameters, transport, incompatible, malformedStream, handlerFailed, vmControlFailed
            case returnPath, destinationFailed, multifdFailed, stallTimeout, switchoverAckTimeout, peerTooSlow
            case notConverging, cancelled, dirtyTrackingUnavailable, unknown
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The parameters or the engine's use are inconsistent. Nothing was sent.
        public static var invalidParameters: Code { Code(.invalidParameters) }
        /// Connecting, listening, accepting, reading or writing the main stream failed.
        public static var transport: Code { Code(.transport) }
        /// The two sides do not fit: the machine configuration differs (destination), or the
        /// pre-flight check found the devices do not match (either side; the message is the diff).
        public static var incompatible: Code { Code(.incompatible) }
        /// The stream carries something wrong: an unknown or newer section, a bad footer, a
        /// malformed record, a truncated stream.
        public static var malformedStream: Code { Code(.malformedStream) }
        /// A handler's hook failed or refused (``handler`` names it; ``cause`` is its error).
        public static var handlerFailed: Code { Code(.handlerFailed) }
        /// The guest could not be stopped (source) or started (destination).
        public static var vmControlFailed: Code { Code(.vmControlFailed) }
        /// Source: the return path failed (closed early, malformed message, SHUT 0 too early).
        public static var returnPath: Code { Code(.returnPath) }
        /// Source: the destination reported failure (SHUT with a non-zero value).
        public static var destinationFailed: Code { Code(.destinationFailed) }
        /// A multifd channel or transfer failed (``cause`` is the ``MultifdError``).
        public static var multifdFailed: Code { Code(.multifdFailed) }
        /// ``MigrationParameters/stallTimeout`` expired: nothing moved.
        public static var stallTimeout: Code { Code(.stallTimeout) }
        /// ``MigrationParameters/switchoverTimeout`` expired: the acknowledgement never came.
        public static var switchoverAckTimeout: Code { Code(.switchoverAckTimeout) }
        /// ``MigrationParameters/minimumReceiveRate``: the peer trickled bytes too slowly.
        public static var peerTooSlow: Code { Code(.peerTooSlow) }
        /// Source, with ``MigrationParameters/abortWhenNotConverging``: the pending data stopped
        /// shrinking for ``MigrationParameters/convergenceWindow``. The guest was never stopped.
        public static var notConverging: Code { Code(.notConverging) }
        /// ``MigrationSource/cancel()``/``MigrationDestination/cancel()`` or task cancellation.
        public static var cancelled: Code { Code(.cancelled) }
        /// Source: a device that writes guest memory by DMA can be tracked neither by its own DMA
        /// logging nor by its IOMMU, and ``MigrationParameters/allowUntrackedDMA`` is off, or
        /// starting the tracking failed: the migration was refused before any byte was sent (the
        /// message names the device and why). Also: tracking ran but no handler made the final
        /// sync of ``SaveContext/dirtyMemory`` after the devices stopped (refused before EOF).
        public static var dirtyTrackingUnavailable: Code { Code(.dirtyTrackingUnavailable) }
        /// An error no other code describes (``cause`` holds it).
        public static var unknown: Code { Code(.unknown) }

        /// Whether the code is one of the timeouts of ``MigrationParameters``.
        public var isTimeout: Bool { [.stallTimeout, .switchoverAckTimeout, .peerTooSlow].contains(value) }

        public var description: String {
            switch value {
            case .invalidParameters: "invalid parameters"
            case .transport: "transport"
            case .incompatible: "incompatible"
            case .malformedStream: "malformed stream"
            case .handlerFailed: "handler failed"
            case .vmControlFailed: "VM control"
            case .returnPath: "return path"
            case .destinationFailed: "destination failed"
            case .multifdFailed: "multifd"
            case .stallTimeout: "stall timeout"
            case .switchoverAckTimeout: "switchover timeout"
            case .peerTooSlow: "too-slow peer"
            case .notConverging: "not converging"
            case .cancelled: "cancelled"
            case .dirtyTrackingUnavailable: "dirty tracking unavailable"
            case .unknown: "unknown"
            }
        }
    }
}
