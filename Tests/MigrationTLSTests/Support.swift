import Foundation
import MigrationCore
import MigrationTLS
import TestSupport

/// Blocking work on a thread of its own, started at once: never on the cooperative pool, which
/// other tests' blocking calls can hold long enough for a peer's handshake deadline to pass.
final class Spawned<T: Sendable>: @unchecked Sendable {
    // @unchecked: `result` and `waiter` are only touched under `lock`.
    private let lock = NSLock()
    private var result: Result<T, any Error>?
    private var waiter: CheckedContinuation<Result<T, any Error>, Never>?

    init(_ body: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            let r: Result<T, any Error>
            do { r = .success(try body()) } catch { r = .failure(error) }
            lock.lock()
            result = r
            if let waiter {
                self.waiter = nil
                lock.unlock()
                waiter.resume(returning: r)
            } else {
                lock.unlock()
            }
        }
        thread.start()
    }

    /// The body's outcome, once it has returned.
    var value: Result<T, any Error> {
        get async {
            await withCheckedContinuation { continuation in
                lock.lock()
                if let result {
                    lock.unlock()
                    continuation.resume(returning: result)
                } else {
                    waiter = continuation
                    lock.unlock()
                }
            }
        }
    }
}

/// Runs blocking `body` on a thread of its own and waits for it.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error> {
    await Spawned(body).value
}

/// A short handshake timeout: the handshakes here are local, and a failing test should end soon.
func configuration(
    _ directory: String, hostname: String? = nil, authorized: [String]? = nil,
    minimum: TLSVersion = .tls13, maximum: TLSVersion = .tls13
) -> TLSConfiguration {
    var c = TLSConfiguration(directory: directory, hostname: hostname, authorizedClients: authorized)
    c.minimumVersion = minimum
    c.maximumVersion = maximum
    c.handshakeTimeout = .seconds(20)
    return c
}

/// A TLS server on a free loopback port: `accept` runs its handshake.
struct LoopbackServer: Sendable {
    let listener: TLSListener
    let port: UInt16

    init(_ configuration: TLSConfiguration) throws {
        let tcp = try TCPListener(host: "127.0.0.1", port: 0)
        port = tcp.port
        listener = try TLSTransport(base: TCPTransport(host: "127.0.0.1", port: tcp.port), configuration: configuration).secure(tcp)
    }

    func client(_ configuration: TLSConfiguration) -> TLSTransport {
        TLSTransport(base: TCPTransport(host: "127.0.0.1", port: port), configuration: configuration)
    }
}

/// Both ends of one handshake; on success, a message each way.
func handshake(server: TLSConfiguration, client: TLSConfiguration) async throws
    -> (server: Result<String, any Error>, client: Result<String, any Error>)
{
    let listening = try LoopbackServer(server)
    let accepted = Spawned { () throws -> String in
        defer { listening.listener.close() }
        let c = try listening.listener.accept()
        defer { c.close() }
        let got = try readLine(c)
        try write("hello source\n", c)
        return got
    }
    let connected = Spawned { () throws -> String in
        let c = try listening.client(client).connect()
        defer { c.close() }
        try write("hello destination\n", c)
        return try readLine(c)
    }
    return (await accepted.value, await connected.value)
}

func write(_ text: String, _ c: any MigrationConnection) throws {
    try Array(text.utf8).withUnsafeBytes { try c.write($0) }
}

/// Reads up to a newline (or the end).
func readLine(_ c: any MigrationConnection) throws -> String {
    var out: [UInt8] = []
    var byte: UInt8 = 0
    while out.count < 4096 {
        let n = try withUnsafeMutableBytes(of: &byte) { try c.read(into: $0) }
        if n == 0 { break }
        out.append(byte)
        if byte == UInt8(ascii: "\n") { break }
    }
    return String(decoding: out, as: UTF8.self)
}

extension Result {
    var error: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
