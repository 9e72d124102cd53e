// A stand-in for MigrationCore's source and destination engines, which are being written on another
// branch: it moves ONE handler's sections between two processes over a real Unix socket, calling the
// handler hooks in QEMU's order, with a return path for switchover-ack. Everything engine-like lives in
// this file so the real engine can replace it:
//
//   source:      MigrationSource(registry:vm:configuration:).run(to: UnixSocketTransport(path:))
//   destination: MigrationDestination(registry:vm:configuration:).run(accepting: UnixSocketListener(path:))
//
// Wire format (QEMU savevm v3): file header, configuration section, OPEN_RETURN_PATH, START, PART…,
// END and FULL sections of the handler (each with its footer), EOF. Return path (destination → source,
// same socket): be16 type, be16 length, payload — SWITCHOVER_ACK once the handler approved, then
// SHUT(0) after a successful load (SHUT(1) after a failed one).

#if os(Linux)
import Glibc
import MigrationCore
import MigrationStream

enum StandInEngine {
    struct Configuration {
        /// The idstr both ends register the handler under (QEMU: the guest's device address + "/vfio").
        var idstr: String
        var instanceID: UInt32 = 0
        /// The section version (VFIO: 1).
        var versionID: UInt32 = 1
        var sectionID: UInt32 = 2
        var machineType = "kernel-vfio-check"
        var switchoverAck = true
        /// A bound on PART sections, so a device that never drains cannot loop forever.
        var maxParts = 256
        /// How long the source waits for the switchover acknowledgement and for SHUT, and the
        /// destination for its peer.
        var timeoutMilliseconds: Int32 = 30_000
    }

    /// What the source saw.
    struct SourceOutcome {
        var parts = 0
        /// PART sections sent before SWITCHOVER_ACK arrived (nil: it never came).
        var ackAfterParts: Int?
        /// The destination's SHUT status (0 = loaded).
        var shutStatus: UInt32?
        var pendingEstimates: [PendingBytes] = []
        var pendingExact: PendingBytes?
        var bytesSent = 0
    }

    /// What the destination saw.
    struct DestinationOutcome {
        var sections: [SectionKind] = []
        var ackNeeded = false
        var ackSent = false
        var returnPathOpened = false
        var bytesReceived = 0
    }

    enum Failure: Error, CustomStringConvertible {
        case socket(String, Int32)
        case protocolError(String)
        case timeout(String)

        var description: String {
            switch self {
            case .socket(let call, let code): "\(call): \(String(cString: strerror(code))) (errno \(code))"
            case .protocolError(let detail): detail
            case .timeout(let what): "timed out waiting for \(what)"
            }
        }
    }

    // MARK: - Source

    /// Connects to the destination's socket (retrying while it is not there yet) and migrates out.
    static func migrateOut(
        _ handler: any MigrationHandler, socketPath: String, configuration: Configuration
    ) throws -> SourceOutcome {
        let fd = try connect(socketPath, timeoutMilliseconds: configuration.timeoutMilliseconds)
        defer { close(fd) }
        let context = StandInContext(identity: identity(of: handler, configuration), ack: configuration.switchoverAck)
        let writer = StreamWriter(sink: FileDescriptorByteSink(fd: fd))
        let returnPath = ReturnPathReader(fd: fd, timeoutMilliseconds: configuration.timeoutMilliseconds)
        var outcome = SourceOutcome()
        func section(_ kind: SectionKind, _ body: () throws -> Void) throws {
            try writer.writeSectionHeader(SectionHeader(
                kind: kind, sectionID: configuration.sectionID, idstr: context.identity.idstr,
                instanceID: context.identity.instanceID, versionID: context.identity.versionID))
            try body()
            try writer.writeFooter(sectionID: configuration.sectionID)
            try writer.flush()
        }
        var ackReceived = !configuration.switchoverAck
        func take(_ message: ReturnPathMessage) throws {
            switch message {
            case .switchoverAck:
                if !ackReceived { outcome.ackAfterParts = outcome.parts }
                ackReceived = true
            case .shut(let status):
                throw Failure.protocolError("the destination shut the return path (status \(status)) during the iterations")
            default:
                break
            }
        }
        do {
            try handler.savePrepare(context: context)
            try writer.writeFileHeader()
            try writer.writeConfiguration(MachineConfiguration(machineType: configuration.machineType))
            try writer.writeCommand(.openReturnPath)
            try section(.start) { try handler.saveSetup(to: writer, context: context) }
            // Iterate while the handler has live data; switch over once it has none for now and the
            // destination acknowledged (QEMU's pending-vs-threshold test, with everything under it).
            var result = IterationResult.more
            while true {
                while let message = try returnPath.next(waiting: false) { try take(message) }
                let estimate = handler.pendingEstimate(context: context)
                outcome.pendingEstimates.append(estimate)
                if result == .done || estimate.total == 0 || !handler.isActiveIterate(context: context) {
                    outcome.pendingExact = try handler.pendingExact(context: context)
                    if ackReceived { break }
                    guard let message = try returnPath.next(waiting: true) else {
                        throw Failure.timeout("the switchover acknowledgement")
                    }
                    try take(message)
                    continue
                }
                guard outcome.parts < configuration.maxParts else {
                    throw Failure.protocolError("still iterating after \(configuration.maxParts) PART sections")
                }
                try section(.part) { result = try handler.saveIterate(to: writer, context: context) }
                outcome.parts += 1
            }
            // The switchover: the guest stops, the rest of the state follows.
            context.vmRunning = false
            try section(.end) { try handler.saveComplete(to: writer, context: context) }
            if handler.hasFullState { try section(.full) { try handler.saveState(to: writer, context: context) } }
            try writer.writeEOF()
            try writer.flush()
            outcome.bytesSent = writer.bytesWritten
            while outcome.shutStatus == nil {
                guard let message = try returnPath.next(waiting: true) else { throw Failure.timeout("the destination's SHUT") }
                if case .shut(let status) = message { outcome.shutStatus = status }
            }
            guard outcome.shutStatus == 0 else {
                throw Failure.protocolError("the destination failed to load (SHUT status \(outcome.shutStatus ?? 0))")
            }
        } catch {
            handler.saveCleanup(succeeded: false)
            throw error
        }
        handler.saveCleanup(succeeded: true)
        return outcome
    }

    // MARK: - Destination

    /// Listens on `socketPath`, accepts one source and migrates in. `listening` runs once the socket
    /// accepts connections.
    static func migrateIn(
        _ handler: any MigrationHandler, socketPath: String, configuration: Configuration, listening: () -> Void = {}
    ) throws -> DestinationOutcome {
        let listener = try listen(socketPath)
        defer {
            close(listener)
            unlink(socketPath)
        }
        listening()
        let fd = try accept(listener, timeoutMilliseconds: configuration.timeoutMilliseconds)
        defer { close(fd) }
        let reader = StreamReader(source: FileDescriptorByteSource(fd: fd))
        let returnPath = ReturnPathWriter(fd: fd)
        let context = StandInContext(identity: identity(of: handler, configuration), ack: configuration.switchoverAck)
        var outcome = DestinationOutcome()
        do {
            try reader.readFileHeader()
            let machine = try reader.readConfiguration()
            guard machine.machineType == configuration.machineType else {
                throw Failure.protocolError("machine type \(machine.machineType), expected \(configuration.machineType)")
            }
            try handler.loadSetup(context: context)
            if configuration.switchoverAck {
                outcome.ackNeeded = handler.switchoverAckNeeded(context: context)
                context.armAcknowledgement(pending: outcome.ackNeeded ? 1 : 0) {
                    // QEMU needs the return path for switchover-ack; the source opens it first thing.
                    guard outcome.returnPathOpened else { throw Failure.protocolError("switchover-ack without a return path") }
                    try returnPath.send(.switchoverAck)
                    outcome.ackSent = true
                }
            }
            loading: while true {
                switch try reader.readRecord() {
                case .command(.openReturnPath):
                    outcome.returnPathOpened = true
                    if configuration.switchoverAck, !outcome.ackNeeded { try context.approveIfNothingPending() }
                case .command(let command):
                    throw Failure.protocolError("unexpected command \(command.name)")
                case .section(let header):
                    let binding = header.binding
                    guard binding.idstr == context.identity.idstr, binding.instanceID == context.identity.instanceID,
                        binding.versionID <= context.identity.versionID
                    else {
                        throw Failure.protocolError("section for \(binding.idstr) (instance \(binding.instanceID), version \(binding.versionID)): no such handler")
                    }
                    outcome.sections.append(header.kind)
                    try handler.loadState(from: reader, header: header, context: context)
                    try reader.readFooter(sectionID: header.sectionID)
                case .eof:
                    break loading
                }
            }
            outcome.bytesReceived = reader.offset
            try handler.loadComplete(context: context)
            if outcome.returnPathOpened { try returnPath.send(.shut(0)) }
        } catch {
            if outcome.returnPathOpened { try? returnPath.send(.shut(1)) }
            handler.loadCleanup(succeeded: false)
            throw error
        }
        handler.loadCleanup(succeeded: true)
        return outcome
    }

    private static func identity(of handler: any MigrationHandler, _ configuration: Configuration) -> HandlerIdentity {
        HandlerIdentity(idstr: configuration.idstr, instanceID: configuration.instanceID, versionID: configuration.versionID)
    }

    // MARK: - Unix sockets

    private static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw Failure.protocolError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return address
    }

    private static func socketFD() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure.socket("socket", errno) }
        return fd
    }

    private static func listen(_ path: String) throws -> Int32 {
        var address = try address(path)
        let fd = try socketFD()
        unlink(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 1) == 0 else {
            let code = errno
            close(fd)
            throw Failure.socket("bind/listen \(path)", code)
        }
        return fd
    }

    private static func accept(_ listener: Int32, timeoutMilliseconds: Int32) throws -> Int32 {
        guard try waitReadable(listener, timeoutMilliseconds: timeoutMilliseconds) else { throw Failure.timeout("the source to connect") }
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { throw Failure.socket("accept", errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }

    private static func connect(_ path: String, timeoutMilliseconds: Int32) throws -> Int32 {
        var address = try address(path)
        var waited: Int32 = 0
        while true {
            let fd = try socketFD()
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if connected == 0 { return fd }
            let code = errno
            close(fd)
            // Not listening yet: the destination process is still starting.
            guard code == ENOENT || code == ECONNREFUSED, waited < timeoutMilliseconds else {
                throw Failure.socket("connect \(path)", code)
            }
            usleep(20_000)
            waited += 20
        }
    }

    fileprivate static func waitReadable(_ fd: Int32, timeoutMilliseconds: Int32) throws -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let n = poll(&pfd, 1, timeoutMilliseconds)
            if n >= 0 { return n > 0 }
            if errno != EINTR { throw Failure.socket("poll", errno) }
        }
    }
}

// MARK: - Contexts

/// The source's and the destination's context for the one handler.
final class StandInContext: SaveContext, LoadContext, @unchecked Sendable {
    let identity: HandlerIdentity
    let switchoverAckEnabled: Bool
    var multifdTransfer: Bool { false }
    /// Single-threaded: the stand-in runs every hook on the calling thread.
    var vmRunning = true
    private var pendingAcks = 0
    private var sendAck: (() throws -> Void)?

    init(identity: HandlerIdentity, ack: Bool) {
        self.identity = identity
        self.switchoverAckEnabled = ack
    }

    func armAcknowledgement(pending: Int, send: @escaping () throws -> Void) {
        pendingAcks = pending
        sendAck = send
    }

    /// With no handler needing an acknowledgement the destination acknowledges at once (QEMU does it
    /// when its pending count starts at 0).
    func approveIfNothingPending() throws {
        if pendingAcks == 0, let send = sendAck {
            sendAck = nil
            try send()
        }
    }

    func approveSwitchover() throws {
        guard switchoverAckEnabled, pendingAcks > 0, let send = sendAck else {
            throw StandInEngine.Failure.protocolError("\(identity): approveSwitchover without a pending acknowledgement")
        }
        pendingAcks -= 1
        if pendingAcks == 0 {
            sendAck = nil
            try send()
        }
    }

    func revokeSwitchover() throws {
        throw StandInEngine.Failure.protocolError("\(identity): revokeSwitchover is not supported by the stand-in engine")
    }
}

// MARK: - Return path

/// Reads return-path messages on the source.
private final class ReturnPathReader {
    let fd: Int32
    let reader: StreamReader
    let timeoutMilliseconds: Int32

    init(fd: Int32, timeoutMilliseconds: Int32) {
        self.fd = fd
        self.reader = StreamReader(source: FileDescriptorByteSource(fd: fd))
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The next message; nil when none arrived (at once, or within the timeout when `waiting`).
    func next(waiting: Bool) throws -> ReturnPathMessage? {
        if reader.bufferedCount == 0 {
            guard try StandInEngine.waitReadable(fd, timeoutMilliseconds: waiting ? timeoutMilliseconds : 0) else { return nil }
        }
        let at = reader.offset
        let type = try reader.readBE16("a return-path message type")
        let length = try reader.readBE16("a return-path message length")
        let payload = try reader.readBytes(Int(length), "a return-path message payload")
        return try ReturnPathMessage.decode(type: type, payload: payload, offset: at)
    }
}

/// Writes return-path messages on the destination.
private final class ReturnPathWriter {
    let sink: FileDescriptorByteSink

    init(fd: Int32) { sink = FileDescriptorByteSink(fd: fd) }

    func send(_ message: ReturnPathMessage) throws {
        let payload = message.payload
        var bytes: [UInt8] = [UInt8(message.type >> 8), UInt8(message.type & 0xFF)]
        bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        bytes += payload
        try bytes.withUnsafeBytes { try sink.write($0) }
    }
}
#endif
