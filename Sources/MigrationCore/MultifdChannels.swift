import MigrationStream
import Synchronization

// Opening and classifying multifd channels (reference §6): every channel starts with a
// 64-byte MultiFDInit; the destination accepts main + N connections in whatever order they
// come and tells them apart by their first four bytes.

/// One multifd channel as the destination accepted it.
struct AcceptedChannel {
    /// The channel id from its header (0..<N).
    let id: Int
    let uuid: [UInt8]
    let connection: any MigrationConnection
}

/// A connection whose first bytes were already read (to classify it) and are replayed first.
final class PrefixedConnection: MigrationConnection, CustomStringConvertible {
    private let base: any MigrationConnection
    private let prefix: Mutex<[UInt8]>

    init(_ base: any MigrationConnection, prefix: [UInt8]) {
        self.base = base
        self.prefix = Mutex(prefix)
    }

    var description: String { "\(base)" }
    var supportsReturnPath: Bool { base.supportsReturnPath }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = prefix.withLock { p -> Int in
            let n = min(p.count, buffer.count)
            guard n > 0 else { return 0 }
            for i in 0..<n { buffer[i] = p[i] }
            p.removeFirst(n)
            return n
        }
        if n > 0 { return n }
        return try base.read(into: buffer)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws { try base.write(bytes) }
    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }
}

/// Reads exactly `count` bytes from a connection (no buffering beyond them).
private func readRaw(_ connection: any MigrationConnection, _ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let n = try out.withUnsafeMutableBytes { raw in
            try connection.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]))
        }
        if n == 0 { throw StreamError.truncated(offset: done, expected: "the first \(count) bytes of a connection") }
        done += n
    }
    return out
}

enum MultifdChannels {
    /// Source: opens `count` channels with `connect` and writes each one's MultiFDInit.
    /// On failure the channels already opened are closed.
    static func open(
        count: Int, uuid: [UInt8], writeTimeout: Duration?,
        connect: () throws -> any MigrationConnection
    ) throws -> [any MigrationConnection] {
        var opened: [any MigrationConnection] = []
        do {
            for id in 0..<count {
                let c: any MigrationConnection
                do {
                    c = try connect()
                } catch {
                    throw MultifdError.channelFailed(channel: id, offset: 0, underlying: error)
                }
                opened.append(c)
                c.setTimeouts(read: nil, write: writeTimeout)
                do {
                    let header = try MultiFDInit(uuid: uuid, channelID: UInt8(id)).encoded()
                    try header.withUnsafeBytes { try c.write($0) }
                } catch {
                    throw MultifdError.channelFailed(channel: id, offset: 0, underlying: error)
                }
            }
            return opened
        } catch {
            abandon(opened)
            throw error
        }
    }

    /// Destination: accepts the main connection and `count` channels from `listener`, in any
    /// order. After the first connection, the others must arrive within `timeout` (nil: wait
    /// forever). Returns the main connection (its first bytes replayed) and the channels
    /// sorted by id.
    static func accept(
        from listener: any MigrationListener, count: Int, timeout: Duration?,
        readTimeout: Duration?
    ) throws -> (main: any MigrationConnection, channels: [AcceptedChannel]) {
        var accepted: [any MigrationConnection] = []
        do {
            accepted.append(try listener.accept())
            // The rest follow at once; a watchdog closes the listener if they do not.
            let done = Monitor(false)
            let fired = SharedValue(false)
            if let timeout {
                startThread(name: "switchover-multifd-accept") {
                    let finished = done.wait(timeout: timeout) { $0 ? true : nil } ?? false
                    if !finished {
                        fired.set(true)
                        listener.close()
                    }
                }
            }
            defer { done.update { $0 = true } }
            while accepted.count < count + 1 {
                do {
                    accepted.append(try listener.accept())
                } catch {
                    if fired.get {
                        throw MultifdError.channelSetup(
                            "only \(accepted.count) of \(count + 1) connections (main + \(count) multifd channels) "
                                + "arrived within \(timeout.map { "\($0)" } ?? "-"); both ends must use the same multifdChannels")
                    }
                    throw error
                }
            }
            return try classify(accepted, count: count, readTimeout: readTimeout)
        } catch {
            abandon(accepted)
            throw error
        }
    }

    /// Destination: sorts already connected channels (`run(over:multifdChannels:)`) by their
    /// first bytes: exactly one main stream, `count` channels with distinct ids.
    static func classify(
        _ connections: [any MigrationConnection], count: Int,
        readTimeout: Duration?
    ) throws -> (main: any MigrationConnection, channels: [AcceptedChannel]) {
        var main: (any MigrationConnection)?
        var channels: [AcceptedChannel] = []
        for (n, c) in connections.enumerated() {
            c.setTimeouts(read: readTimeout, write: readTimeout)
            let head = try readRaw(c, 4)
            let magic = head.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            switch magic {
            case SavevmFormat.magic:
                guard main == nil else { throw MultifdError.channelSetup("two connections open with a migration stream header") }
                main = PrefixedConnection(c, prefix: head)
            case MultiFDFormat.magic:
                let header = try MultiFDInit.decode(head + readRaw(c, MultiFDInit.encodedLength - 4))
                let id = Int(header.channelID)
                guard id < count else {
                    throw MultifdError.channelSetup(
                        "a channel says it is number \(id), but this destination expects \(count) (multifdChannels)")
                }
                guard !channels.contains(where: { $0.id == id }) else {
                    throw MultifdError.channelSetup("two connections claim multifd channel \(id)")
                }
                channels.append(AcceptedChannel(id: id, uuid: header.uuid, connection: c))
            default:
                let tls = magic >> 16 == 0x1603 ? " but a TLS handshake: the source uses TLS, this end does not" : ""
                throw MultifdError.channelSetup(
                    "connection \(n) opens with 0x\(String(magic, radix: 16)), "
                        + "neither a migration stream (0x5145564d) nor a multifd channel (0x11223344)\(tls)")
            }
        }
        guard let main else { throw MultifdError.channelSetup("no connection carries the main migration stream") }
        guard channels.count == count else {
            throw MultifdError.channelSetup("\(channels.count) multifd channels arrived, \(count) expected")
        }
        return (main, channels.sorted { $0.id < $1.id })
    }
}
