import CSwitchoverTLS
import MigrationCore
import MigrationStream
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A migration channel secured with TLS: a ``/MigrationCore/DescriptorConnection`` (a TCP or
/// Unix socket) whose bytes are TLS records.
///
/// As the plaintext connection it wraps, it carries the return path (one thread writes while
/// another reads), bounds blocked reads and writes with ``setTimeouts(read:write:)``, and
/// ``shutdown()`` unblocks them from any thread. The socket is made non-blocking: every OpenSSL
/// call runs under one lock and returns at once; waits happen in `poll`, outside the lock.
public final class TLSConnection: MigrationConnection, CustomStringConvertible {
    private let base: DescriptorConnection
    // The session (swo_tls *). OpenSSL allows one call at a time on it: `session` guards it.
    private let session: SessionLock
    private let state = ConnectionState()
    private let context: TLSContext
    /// The negotiated version.
    public let version: TLSVersion
    /// The negotiated cipher suite.
    public let cipherSuite: String
    /// The subject (RFC 2253) of the peer's verified certificate.
    public let peerSubject: String

    public var supportsReturnPath: Bool { base.supportsReturnPath }
    public var description: String { "\(base) (\(version))" }

    /// Runs the handshake on `base` within the configuration's handshake timeout. On failure
    /// `base` is closed and the reason thrown as a ``TLSError``.
    init(base: DescriptorConnection, context: TLSContext, hostname: String?) throws {
        (self.base, self.context) = (base, context)
        let timeout = context.configuration.handshakeTimeout
        let deadline = MonotonicClock().now + timeout
        var raw: OpaquePointer?
        do {
            let flags = fcntl(base.fd, F_GETFL)
            guard flags >= 0, fcntl(base.fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
                throw TransportError.system(operation: "fcntl O_NONBLOCK", errno: Errno(rawValue: errno))
            }
            if context.server { try Self.refusePlaintext(fd: base.fd, deadline: deadline, timeout: timeout) }
            var message = [CChar](repeating: 0, count: 256)
            guard let s = swo_tls_new(context.pointer, base.fd, hostname, &message, message.count) else {
                throw TLSError.configuration(string(fromC: message))
            }
            raw = s
            session = SessionLock(s)
            try Self.drive(fd: base.fd, deadline: deadline, timeout: timeout, hostname: hostname) {
                swo_tls_handshake(s)
            } failure: {
                Self.failure(s, hostname: hostname)
            }
            let negotiated = swo_tls_version(s)
            if !context.server && negotiated == Int32(TLSVersion.tls13.rawValue) && context.configuration.awaitServerConfirmation {
                // The server checks our certificate after our last handshake message; its
                // session ticket (or its alert) says how that went.
                do {
                    try Self.drive(fd: base.fd, deadline: deadline, timeout: timeout, hostname: hostname) {
                        swo_tls_await_confirmation(s)
                    } failure: {
                        Self.failure(s, hostname: hostname)
                    }
                } catch TLSError.handshakeTimedOut {
                    // A server that sends no ticket (GnuTLS by default): it did not refuse us.
                }
            }
            version = TLSVersion(rawValue: Int(negotiated)) ?? .tls13
            cipherSuite = String(cString: swo_tls_cipher(s))
            var subject = [CChar](repeating: 0, count: 512)
            _ = swo_tls_peer_subject(s, &subject, subject.count)
            peerSubject = string(fromC: subject)
        } catch {
            if let raw { swo_tls_free(raw) }
            base.shutdown()
            base.close()
            throw error
        }
    }

    deinit {
        close()
        session.run { swo_tls_free($0) }
    }

    /// Server: the first byte of a TLS connection is a handshake record (0x16); anything else
    /// is a plaintext peer, refused with its own error rather than OpenSSL's parse failure.
    private static func refusePlaintext(fd: Int32, deadline: Duration, timeout: Duration) throws {
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, Int32(MSG_PEEK))
            if n == 1 { break }
            if n == 0 { throw TLSError.peerClosedDuringHandshake }
            let e = errno
            guard e == EAGAIN || e == EWOULDBLOCK || e == EINTR else {
                if e == ECONNRESET { throw TLSError.peerClosedDuringHandshake }
                throw TransportError.system(operation: "recv", errno: Errno(rawValue: e))
            }
            if e != EINTR { try waitReady(fd, for: Int16(POLLIN), until: deadline) { TLSError.handshakeTimedOut(after: timeout) } }
        }
        if byte != 0x16 { throw TLSError.plaintextPeer(firstByte: byte) }
    }

    /// Repeats `step` until it is done, polling in between, until the deadline.
    private static func drive(
        fd: Int32, deadline: Duration, timeout: Duration, hostname: String?,
        _ step: () -> Int32, failure: () -> any Error
    ) throws {
        while true {
            switch step() {
            case Int32(SWO_TLS_OK): return
            case Int32(SWO_TLS_WANT_READ):
                try waitReady(fd, for: Int16(POLLIN), until: deadline) { TLSError.handshakeTimedOut(after: timeout) }
            case Int32(SWO_TLS_WANT_WRITE):
                try waitReady(fd, for: Int16(POLLOUT), until: deadline) { TLSError.handshakeTimedOut(after: timeout) }
            case Int32(SWO_TLS_EOF): throw TLSError.peerClosedDuringHandshake
            default: throw failure()
            }
        }
    }

    /// The typed error for the session's last failure.
    private static func failure(_ s: OpaquePointer, hostname: String?) -> any Error {
        var info = swo_tls_failure_info()
        swo_tls_last_failure(s, &info)
        let detail = withUnsafeBytes(of: info.detail) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let subject = withUnsafeBytes(of: info.subject) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch Int(info.kind) {
        case SWO_TLS_F_UNKNOWN_CA: return TLSError.unknownCA(subject: subject, detail: detail)
        case SWO_TLS_F_EXPIRED: return TLSError.certificateExpired(subject: subject, detail: detail)
        case SWO_TLS_F_NOT_YET_VALID: return TLSError.certificateNotYetValid(subject: subject, detail: detail)
        case SWO_TLS_F_HOSTNAME: return TLSError.hostnameMismatch(expected: hostname ?? "", subject: subject)
        case SWO_TLS_F_REVOKED: return TLSError.certificateRevoked(subject: subject)
        case SWO_TLS_F_NOT_AUTHORIZED: return TLSError.notAuthorized(subject: subject)
        case SWO_TLS_F_NO_PEER_CERT: return TLSError.noPeerCertificate
        case SWO_TLS_F_BAD_CERT: return TLSError.badCertificate(subject: subject, detail: detail)
        case SWO_TLS_F_VERSION: return TLSError.protocolVersion(detail)
        case SWO_TLS_F_PEER_ALERT: return TLSError.refusedByPeer(alert: Int(info.alert), detail: detail)
        case SWO_TLS_F_NOT_TLS: return TLSError.protocolFailure("the peer does not speak TLS: \(detail)")
        case SWO_TLS_F_PEER_CLOSED: return TLSError.peerClosedDuringHandshake
        case SWO_TLS_F_SYSCALL:
            return TransportError.system(operation: "TLS handshake", errno: Errno(rawValue: info.sys_errno))
        default: return TLSError.protocolFailure(detail.isEmpty ? "OpenSSL gave no reason" : detail)
        }
    }

    public func setTimeouts(read: Duration?, write: Duration?) { state.setTimeouts(read: read, write: write) }

    /// What to poll for after `SWO_TLS_WANT_READ` (readable) or `SWO_TLS_WANT_WRITE` (writable).
    private static func pollEvents(wanted r: Int32) -> Int16 {
        r == Int32(SWO_TLS_WANT_READ) ? Int16(POLLIN) : Int16(POLLOUT)
    }

    /// The error for a failed read or write after the handshake.
    private func dataFailure(operation: String) -> any Error {
        let error = session.run { Self.failure($0, hostname: nil) }
        switch error {
        case TLSError.peerClosedDuringHandshake: return TransportError.connectionClosed(operation: operation)
        case TransportError.system(_, let code): return TransportError.system(operation: operation, errno: code)
        default: return error
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let pointer = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let (timeout, shutDown) = state.reading
        if shutDown { return 0 }
        while true {
            var done = 0
            let r = session.run { swo_tls_read($0, pointer, buffer.count, &done) }
            switch r {
            case Int32(SWO_TLS_OK): return done
            case Int32(SWO_TLS_EOF): return 0
            case Int32(SWO_TLS_WANT_READ), Int32(SWO_TLS_WANT_WRITE):
                if state.isShutDown { return 0 }
                try waitReady(base.fd, for: Self.pollEvents(wanted: r), timeout: timeout, operation: "TLS read on \(base)")
            default:
                if state.isShutDown { return 0 }
                throw dataFailure(operation: "TLS read on \(base)")
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let pointer = bytes.baseAddress, bytes.count > 0 else { return }
        let timeout = state.writeTimeout
        while true {
            if state.isShutDown { throw TransportError.shutDown }
            var done = 0
            let r = session.run { swo_tls_write($0, pointer, bytes.count, &done) }
            switch r {
            case Int32(SWO_TLS_OK): return
            case Int32(SWO_TLS_EOF):
                // The peer sent close_notify: it reads nothing more.
                throw TransportError.connectionClosed(operation: "TLS write on \(base)")
            case Int32(SWO_TLS_WANT_READ), Int32(SWO_TLS_WANT_WRITE):
                try waitReady(base.fd, for: Self.pollEvents(wanted: r), timeout: timeout, operation: "TLS write on \(base)")
            default:
                if state.isShutDown { throw TransportError.shutDown }
                throw dataFailure(operation: "TLS write on \(base)")
            }
        }
    }

    public func shutdown() {
        if state.markShutDown() { base.shutdown() }
    }

    public func close() {
        guard state.markClosed() else { return }
        // close_notify tells the peer the stream ended here, not that it was cut.
        if !state.isShutDown { session.run { swo_tls_close_notify($0) } }
        base.close()
    }
}

/// The TLS session and the lock that serializes every OpenSSL call on it.
private final class SessionLock: @unchecked Sendable {
    // @unchecked: `pointer` is only used inside `run`, under `mutex`.
    private var mutex = pthread_mutex_t()
    private let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) {
        self.pointer = pointer
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    func run<R>(_ body: (OpaquePointer) -> R) -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body(pointer)
    }
}
