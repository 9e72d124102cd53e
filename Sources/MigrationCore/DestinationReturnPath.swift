import Logging
import MigrationStream
import Synchronization

/// The destination's return-path writer: messages go out whole, one at a time, from the load
/// thread or from a handler's own thread (an acknowledgement).
final class ReturnPathWriter: Sendable {
    private struct State {
        var open = false
        /// SHUT went out: it is the last message (a backlog report after it is dropped).
        var shut = false
    }

    private let connection: any MigrationConnection
    private let state = Mutex(State())

    init(connection: any MigrationConnection) { self.connection = connection }

    func open() { state.withLock { $0.open = true } }
    var isOpen: Bool { state.withLock { $0.open } }

    /// Sends `message`; false when the return path is not open, or (a LOAD_BACKLOG) when SHUT
    /// has gone out.
    @discardableResult
    func send(_ message: ReturnPathMessage) throws -> Bool {
        try state.withLock { s in
            guard s.open else { return false }
            if case .loadBacklog = message, s.shut { return false }
            let sink = MemoryByteSink()
            let writer = StreamWriter(sink: sink)
            try writer.writeReturnPathMessage(message)
            try writer.flush()
            try sink.bytes.withUnsafeBytes { try connection.write($0) }
            if case .shut = message { s.shut = true }
            return true
        }
    }
}

/// The destination's switchover-ack accounting (QEMU `switchover_ack_pending_num`, per
/// handler so it can be revoked).
final class DestinationAcks: Sendable {
    private struct State {
        var enabled = false
        var needed: Set<HandlerIdentity.Key> = []
        var acked: Set<HandlerIdentity.Key> = []
        var everAcked: Set<HandlerIdentity.Key> = []
        var singleAckSent = false
        var extensions = false
    }

    private let state = Mutex(State())
    private let rp: ReturnPathWriter
    private let logger: Logger

    init(rp: ReturnPathWriter, logger: Logger) { (self.rp, self.logger) = (rp, logger) }

    /// After loadSetup: the handlers that will acknowledge.
    func configure(enabled: Bool, needed: Set<HandlerIdentity.Key>) {
        state.withLock { s in
            s.enabled = enabled
            s.needed = needed
        }
    }

    /// Sends the single SWITCHOVER_ACK when nothing is pending and it was not sent yet.
    private func sendSingleAckIfDue(_ s: inout State) throws {
        guard s.enabled, !s.singleAckSent, s.acked.count == s.needed.count, rp.isOpen else { return }
        if try rp.send(.switchoverAck) {
            s.singleAckSent = true
            logger.debug("switchover acknowledged")
        }
    }

    /// OPEN_RETURN_PATH: QEMU acknowledges at once when no handler needs to.
    func returnPathOpened() throws {
        try state.withLock { s in try sendSingleAckIfDue(&s) }
    }

    /// SWITCHOVER_HELLO: tell the source each handler's state from now on.
    func helloReceived() throws {
        try state.withLock { s in
            s.extensions = true
            guard s.enabled else { return }
            for key in s.needed.sorted(by: { ($0.idstr, $0.instanceID) < ($1.idstr, $1.instanceID) }) {
                try rp.send(.ackState(idstr: key.idstr, instanceID: key.instanceID, acknowledged: s.acked.contains(key)))
            }
        }
    }

    func approve(_ identity: HandlerIdentity) throws {
        let key = identity.key
        try state.withLock { s in
            guard s.enabled else { throw SwitchoverAckError.disabled(identity) }
            guard s.needed.contains(key) else { throw SwitchoverAckError.notNeeded(identity) }
            guard !s.acked.contains(key) else { throw SwitchoverAckError.alreadyAcknowledged(identity) }
            s.acked.insert(key)
            s.everAcked.insert(key)
            if s.extensions { try rp.send(.ackState(idstr: key.idstr, instanceID: key.instanceID, acknowledged: true)) }
            try sendSingleAckIfDue(&s)
        }
    }

    func revoke(_ identity: HandlerIdentity) throws {
        let key = identity.key
        try state.withLock { s in
            guard s.enabled else { throw SwitchoverAckError.disabled(identity) }
            guard s.acked.contains(key) else { throw SwitchoverAckError.notAcknowledged(identity) }
            s.acked.remove(key)
            if s.extensions {
                try rp.send(.ackState(idstr: key.idstr, instanceID: key.instanceID, acknowledged: false))
            } else if s.singleAckSent {
                logger.warning(
                    "\(identity) revoked its acknowledgement, but the source (no extensions) was already told it may switch over")
            }
        }
    }

    func ackState(_ key: HandlerIdentity.Key) -> AckState {
        state.withLock { s in
            guard s.enabled, s.needed.contains(key) else { return .notNeeded }
            if s.acked.contains(key) { return .acknowledged }
            return s.everAcked.contains(key) ? .revoked : .pending
        }
    }

    var allAcknowledged: Bool { state.withLock { !$0.enabled || $0.acked.count == $0.needed.count } }
}
