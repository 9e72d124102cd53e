import SystemPackage
import VFIO

/// mlx5 record framing: `u64 record_size @0; u32 flags @8 (bit 0 OPTIONAL); u32 tag @12`, little-endian.
enum MLX5Record {
    static let headerSize: UInt64 = 16
    /// Tag 0: an opaque firmware image, loaded with LOAD_VHCA_STATE.
    static let tagFirmwareData: UInt32 = 0
    /// Tag 1: `u64 stop_copy_size`, the bytes the source pre-allocated for the final image.
    static let tagStopCopySize: UInt32 = 1
    static let flagOptional: UInt32 = 1
    /// The firmware LOAD size field is 32 bits.
    static let maxLoadSize: UInt64 = 0xFFFF_FFFF
    /// Images larger than this are split into several records (mlx5 caps one SAVE at 2^32 - PAGE_SIZE).
    static let maxRecordPayload: UInt64 = 0xFFFF_F000
    static let pageSize: UInt64 = 4096

    static func header(size: UInt64, flags: UInt32, tag: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        LittleEndianBytes.append(size, to: &bytes)
        LittleEndianBytes.append(flags, to: &bytes)
        LittleEndianBytes.append(tag, to: &bytes)
        return bytes
    }

    static func chunkCount(_ image: UInt64) -> Int {
        image == 0 ? 1 : Int((image + maxRecordPayload - 1) / maxRecordPayload)
    }
}

/// A piece of the save stream: literal bytes (headers, mtty) or a range of derived content.
enum SimulatedSegment {
    case literal([UInt8])
    case derived(stream: UInt64, offset: UInt64, length: UInt64)

    var length: UInt64 {
        switch self {
        case .literal(let bytes): UInt64(bytes.count)
        case .derived(_, _, let length): length
        }
    }
}

/// The state of one save fd.
struct SimulatedSaveSession {
    let ref: SimulatedSessionRef
    var id: UInt64 { ref.id }
    var segments: [SimulatedSegment] = []
    var head = 0
    var headOffset: UInt64 = 0
    /// Queued bytes not yet read.
    var buffered: UInt64 = 0
    /// Initial bytes not yet read (initial segments are always queued first).
    var initialRemaining: UInt64 = 0
    var finalQueued = false
    /// Digest of every byte read so far.
    var hasher = VFIOStateHasher()

    init(ref: SimulatedSessionRef) { self.ref = ref }

    mutating func append(_ segment: SimulatedSegment, initial: Bool = false) {
        guard segment.length > 0 else { return }
        segments.append(segment)
        buffered += segment.length
        if initial { initialRemaining += segment.length }
    }
}

/// The state of one resume fd.
struct SimulatedResumeSession {
    enum Parser {
        case mtty
        case opaque
        case mlx5(MLX5Parser)
    }

    struct MLX5Parser {
        var header: [UInt8] = []
        var inPayload = false
        var tag: UInt32 = 0
        var optional = false
        var remaining: UInt64 = 0
        var stopCopySizeBytes: [UInt8] = []
        var stopCopySize: UInt64?
    }

    let ref: SimulatedSessionRef
    var id: UInt64 { ref.id }
    var received: UInt64 = 0
    var hasher = VFIOStateHasher()
    /// The bytes written, while within `retainedLoadLimit` (mtty always fits).
    var retained: [UInt8]? = []
    /// A failed write poisons the file: later writes fail ENODEV.
    var poisoned = false
    var parser: Parser
    var images = 0

    init(ref: SimulatedSessionRef, configuration: SimulatedVFIOConfiguration) {
        self.ref = ref
        switch configuration.payload {
        case .mtty: parser = .mtty
        case .opaque: parser = .opaque
        case .mlx5: parser = .mlx5(MLX5Parser())
        }
    }
}

extension SimulatedDriverState {
    // MARK: Save stream production

    /// The mtty header: magic, version 1.0, nr_ports, flags 0 (24 bytes, little-endian host ABI).
    static func mttyHeader(ports: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        LittleEndianBytes.append(0x7E9D_0989_8C3E_2C4E as UInt64, to: &bytes)
        LittleEndianBytes.append(1 as UInt32, to: &bytes)
        LittleEndianBytes.append(0 as UInt32, to: &bytes)
        LittleEndianBytes.append(UInt32(ports), to: &bytes)
        LittleEndianBytes.append(0 as UInt32, to: &bytes)
        return bytes
    }

    private mutating func takeImageStream() -> UInt64 {
        defer { nextImageStream += 1 }
        return nextImageStream
    }

    /// Queues one firmware image as one or more FW_DATA records.
    private mutating func queueImage(_ size: UInt64, into session: inout SimulatedSaveSession, initial: Bool) {
        let stream = takeImageStream()
        var offset: UInt64 = 0
        repeat {
            let length = min(size - offset, MLX5Record.maxRecordPayload)
            session.append(.literal(MLX5Record.header(size: length, flags: 0, tag: MLX5Record.tagFirmwareData)), initial: initial)
            session.append(.derived(stream: stream, offset: offset, length: length), initial: initial)
            offset += length
        } while offset < size
    }

    /// RUNNING→PRE_COPY / RUNNING_P2P→PRE_COPY_P2P: the initial data.
    mutating func queuePreCopyStart(into session: inout SimulatedSaveSession, configuration: SimulatedVFIOConfiguration) {
        switch configuration.payload {
        case .mtty(let ports):
            session.append(.literal(Self.mttyHeader(ports: ports)), initial: true)
        case .opaque(_, let initialBytes):
            session.append(.derived(stream: 0, offset: 0, length: initialBytes), initial: true)
        case .mlx5(let payload):
            if payload.stopCopySizeRecord {
                // The source pre-allocates the final image buffer: the size, page-rounded.
                let size = (payload.imageSize + MLX5Record.pageSize - 1) / MLX5Record.pageSize * MLX5Record.pageSize
                var record = MLX5Record.header(size: 8, flags: MLX5Record.flagOptional, tag: MLX5Record.tagStopCopySize)
                LittleEndianBytes.append(size, to: &record)
                session.append(.literal(record), initial: true)
            }
            queueImage(payload.imageSize, into: &session, initial: true)
        }
    }

    /// STOP→STOP_COPY: the whole state at once.
    mutating func queueFullSave(into session: inout SimulatedSaveSession, configuration: SimulatedVFIOConfiguration) {
        switch configuration.payload {
        case .mtty(let ports):
            session.append(.literal(Self.mttyHeader(ports: ports) + mttyPorts))
        case .opaque(let size, _):
            session.append(.derived(stream: 0, offset: 0, length: size))
        case .mlx5(let payload):
            queueImage(payload.imageSize, into: &session, initial: false)
        }
        session.finalQueued = true
    }

    /// PRE_COPY(_P2P)→STOP_COPY: the rest of the state on the same fd.
    mutating func queueFinal(into session: inout SimulatedSaveSession, configuration: SimulatedVFIOConfiguration) {
        switch configuration.payload {
        case .mtty:
            session.append(.literal(mttyPorts))
        case .opaque(let size, let initialBytes):
            session.append(.derived(stream: 0, offset: initialBytes, length: size - initialBytes))
        case .mlx5(let payload):
            queueImage(payload.finalImageSize + pendingDirty, into: &session, initial: false)
            pendingDirty = 0
        }
        session.finalQueued = true
    }

    // MARK: Save fd

    mutating func read(
        _ ref: SimulatedSessionRef, into buffer: UnsafeMutableRawBufferPointer, configuration: SimulatedVFIOConfiguration
    ) -> Result<Int, Errno> {
        guard var session = save, session.id == ref.id else { return .failure(.operationNotSupportedByDevice) }
        var written = 0
        while written < buffer.count, session.head < session.segments.count {
            let segment = session.segments[session.head]
            let count = Int(min(segment.length - session.headOffset, UInt64(buffer.count - written)))
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[written..<(written + count)])
            switch segment {
            case .literal(let bytes):
                let start = Int(session.headOffset)
                bytes[start..<(start + count)].withUnsafeBytes { target.copyMemory(from: $0) }
            case .derived(let stream, let offset, _):
                DerivedBytes.fill(target, seed: configuration.seed, stream: stream, offset: offset + session.headOffset)
            }
            written += count
            session.headOffset += UInt64(count)
            if session.headOffset == segment.length {
                session.head += 1
                session.headOffset = 0
            }
        }
        if session.head > 64 {
            session.segments.removeFirst(session.head)
            session.head = 0
        }
        session.hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<written]))
        session.buffered -= UInt64(written)
        session.initialRemaining -= min(session.initialRemaining, UInt64(written))
        save = session
        if written > 0 || buffer.isEmpty { return .success(written) }
        // Nothing buffered: a temporary end in PRE_COPY states, the permanent end in STOP_COPY.
        if current.isPreCopy, configuration.preCopyEndOfData == .enomsg { return .failure(.noMessage) }
        return .success(0)
    }

    mutating func precopyInfo(
        _ ref: SimulatedSessionRef, configuration: SimulatedVFIOConfiguration
    ) -> Result<(initial: UInt64, dirty: UInt64, reinit: Bool), Errno> {
        guard current.isPreCopy else { return .failure(.invalidArgument) }
        guard var session = save, session.id == ref.id else { return .failure(.operationNotSupportedByDevice) }
        var firmwareDirty: UInt64 = 0
        var reinit = false
        if case .mlx5 = configuration.payload, let size = configuration.reinitImageSize, !reinitFired, current == .preCopy,
            session.initialRemaining == 0, session.buffered == 0
        {
            // The firmware reports a new initial chunk: with the v2 opt-in it is new initial data
            // (REINIT, dirty counted from it), without it dirty data like any other image.
            reinitFired = true
            reinit = precopyInfoV2
            queueImage(size, into: &session, initial: precopyInfoV2)
        }
        if case .mlx5 = configuration.payload {
            // mlx5: with everything read and firmware reporting changes, this ioctl starts the next
            // incremental SAVE. In PRE_COPY_P2P the device is suspended and only buffered bytes count.
            if current == .preCopy, session.buffered == 0, pendingDirty > 0 {
                queueImage(pendingDirty, into: &session, initial: false)
                pendingDirty = 0
            }
            firmwareDirty = current == .preCopy ? pendingDirty : 0
        }
        save = session
        return .success((session.initialRemaining, session.buffered - session.initialRemaining + firmwareDirty, reinit))
    }

    // MARK: Resume fd

    /// Absorbs a write; returns the result and the load time the write spends.
    mutating func write(
        _ ref: SimulatedSessionRef, from buffer: UnsafeRawBufferPointer, configuration: SimulatedVFIOConfiguration
    ) -> (Result<Int, Errno>, Duration) {
        if case .mtty(let ports) = configuration.payload {
            // mtty checks position + length against the state size before it looks at the session, and
            // ending a session rewinds the file: an ended fd says ENOMEM to an oversized write.
            let position = resume?.id == ref.id ? resume?.received ?? 0 : 0
            if position + UInt64(buffer.count) > 24 + 36 * UInt64(ports) { return (.failure(.noMemory), .zero) }
        }
        guard var session = resume, session.id == ref.id, !session.poisoned else {
            return (.failure(.operationNotSupportedByDevice), .zero)
        }
        let count = UInt64(buffer.count)
        let before = session.received
        let after = before + count
        var cost = Duration.zero
        /// mtty: the write completed a header that does not match this device. As the kernel, the bytes
        /// still count (the next write continues after them) but the write fails EFAULT.
        var badHeader = false
        switch (session.parser, configuration.payload) {
        case (.mtty, .mtty(let ports)):
            let total = 24 + 36 * UInt64(ports)
            guard after <= total else { return (.failure(.noMemory), .zero) }
            if before < 24, after >= 24 {
                let header = Array((session.retained ?? [])[0..<Int(before)]) + Array(buffer[0..<Int(24 - before)])
                if header == Self.mttyHeader(ports: ports) {
                    cost += configuration.loadCost.initial
                } else {
                    badHeader = true
                }
            }
            if after == total, before < total, !badHeader { cost += configuration.loadCost.final }
        case (.opaque, .opaque(let size, let initialBytes)):
            guard after <= size else { return (.failure(.noMemory), .zero) }
            if initialBytes > 0, before < initialBytes, after >= initialBytes { cost += configuration.loadCost.initial }
            if after == size, before < size { cost += configuration.loadCost.final }
        case (.mlx5(var parser), _):
            let outcome = Self.parseMLX5(buffer, parser: &parser, session: &session, configuration: configuration)
            session.parser = .mlx5(parser)
            switch outcome {
            case .failure(let errno):
                session.poisoned = true
                resume = session
                return (.failure(errno), .zero)
            case .success(let loadCost):
                cost += loadCost
            }
        default:
            return (.failure(.invalidArgument), .zero)
        }
        session.received = after
        session.hasher.update(buffer)
        if var retained = session.retained {
            session.retained = nil  // release the reference so the append does not copy
            if retained.count + buffer.count <= configuration.retainedLoadLimit {
                retained.append(contentsOf: buffer)
                session.retained = retained
            }
        }
        resume = session
        if badHeader { return (.failure(.badAddress), .zero) }
        return (.success(buffer.count), cost)
    }

    private static func parseMLX5(
        _ buffer: UnsafeRawBufferPointer, parser: inout SimulatedResumeSession.MLX5Parser,
        session: inout SimulatedResumeSession, configuration: SimulatedVFIOConfiguration
    ) -> Result<Duration, Errno> {
        var cost = Duration.zero
        var index = 0
        func completeRecord() {
            parser.inPayload = false
            if parser.tag == MLX5Record.tagFirmwareData {
                // LOAD_VHCA_STATE runs inside write().
                session.images += 1
                cost += session.images == 1 ? configuration.loadCost.initial : configuration.loadCost.final
            } else if parser.tag == MLX5Record.tagStopCopySize, parser.stopCopySizeBytes.count == 8 {
                parser.stopCopySize = min(
                    LittleEndianBytes.load(UInt64.self, from: parser.stopCopySizeBytes, at: 0), MLX5Record.maxLoadSize)
            }
        }
        while index < buffer.count {
            if !parser.inPayload {
                let take = min(Int(MLX5Record.headerSize) - parser.header.count, buffer.count - index)
                parser.header.append(contentsOf: buffer[index..<(index + take)])
                index += take
                guard parser.header.count == Int(MLX5Record.headerSize) else { continue }
                let size = LittleEndianBytes.load(UInt64.self, from: parser.header, at: 0)
                let flags = LittleEndianBytes.load(UInt32.self, from: parser.header, at: 8)
                parser.tag = LittleEndianBytes.load(UInt32.self, from: parser.header, at: 12)
                parser.header = []
                guard size <= MLX5Record.maxLoadSize else { return .failure(.noMemory) }
                let known = parser.tag == MLX5Record.tagFirmwareData || parser.tag == MLX5Record.tagStopCopySize
                if !known, flags & MLX5Record.flagOptional == 0 { return .failure(.notSupportedOnSocket) }
                parser.remaining = size
                parser.stopCopySizeBytes = []
                parser.inPayload = true
                if size == 0 { completeRecord() }
            } else {
                let take = Int(min(parser.remaining, UInt64(buffer.count - index)))
                if parser.tag == MLX5Record.tagStopCopySize {
                    let room = max(0, 8 - parser.stopCopySizeBytes.count)
                    parser.stopCopySizeBytes.append(contentsOf: buffer[index..<(index + min(room, take))])
                }
                index += take
                parser.remaining -= UInt64(take)
                if parser.remaining == 0 { completeRecord() }
            }
        }
        return .success(cost)
    }

    /// RESUMING→STOP: the driver checks the state is complete and commits it.
    mutating func commitResume(configuration: SimulatedVFIOConfiguration) -> Result<Void, Errno> {
        guard let session = resume else { return .success(()) }
        switch configuration.payload {
        case .mtty(let ports):
            guard session.received == 24 + 36 * UInt64(ports), let bytes = session.retained else {
                return .failure(.invalidArgument)
            }
            mttyPorts = Array(bytes[24...])
        case .opaque(let size, _):
            guard session.received == size else { return .failure(.invalidArgument) }
        case .mlx5:
            // mlx5 loaded every image during write(); RESUMING→STOP only closes the file.
            break
        }
        lastLoadedDigest = session.hasher.finalize()
        loadedBytes = session.retained
        loadedImageCount = session.images
        resume = nil
        return .success(())
    }
}
