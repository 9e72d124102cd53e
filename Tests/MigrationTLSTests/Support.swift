import Foundation
import MigrationCore
import MigrationTLS
import TestSupport

/// Runs blocking `body` on a thread of its own (never on the cooperative pool, which two
/// blocked handshakes could fill).
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error> {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            do { continuation.resume(returning: .success(try body())) } catch { continuation.resume(returning: .failure(error)) }
        }
        thread.start()
    }
}

/// A short handshake timeout: the handshakes here are local, and a failing test should end soon.
func configuration(_ directory: String, hostname: String? = nil, authorized: [String]? = nil,
                   minimum: TLSVersion = .tls13, maximum: TLSVersion = .tls13) -> TLSConfiguration {
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
    -> (server: Result<String, any Error>, client: Result<String, any Error>) {
    let listening = try LoopbackServer(server)
    async let accepted = onThread { () throws -> String in
        defer { listening.listener.close() }
        let c = try listening.listener.accept()
        defer { c.close() }
        let got = try readLine(c)
        try write("hello source\n", c)
        return got
    }
    let connected = await onThread { () throws -> String in
        let c = try listening.client(client).connect()
        defer { c.close() }
        try write("hello destination\n", c)
        return try readLine(c)
    }
    return (await accepted, connected)
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
