import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

#if canImport(Glibc)
import Glibc
#endif

@Suite("Simulated device: data fd semantics and payload formats")
struct SimulatedDataTests {
    static let mttyHeader2: [UInt8] = [
        0x4E, 0x2C, 0x3E, 0x8C, 0x89, 0x09, 0x9D, 0x7E, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0
    ]

    // MARK: mtty

    @Test("mtty PRE_COPY exposes the 24-byte header, then 0 at the temporary end; STOP_COPY appends the ports")
    func mttyPreCopyThenStopCopy() throws {
        let source = try SimulatedVFIODevice(.mtty(ports: 2, seed: 7), clock: ManualSimulationClock())
        let fd = try #require(try source.setState(.preCopy))
        #expect(try fd.precopyInfo() == VFIOPrecopyInfo(initialBytes: 24, dirtyBytes: 0))
        let first = try fd.readChunk(7)
        #expect(first.bytes == Array(Self.mttyHeader2[0..<7]))
        let (rest, end) = try fd.drain(chunk: 7)
        #expect(first.bytes + rest == Self.mttyHeader2)
        #expect(end == .drainedForNow)
        #expect(try fd.precopyInfo() == VFIOPrecopyInfo(initialBytes: 0, dirtyBytes: 0))

        #expect(try source.setState(.stopCopy) == nil)
        #expect(source.recordedArcs.suffix(2) == [SimulatedVFIOArc(.preCopy, .preCopyP2P), SimulatedVFIOArc(.preCopyP2P, .stopCopy)])
        let (ports, final) = try fd.drain()
        #expect(ports.count == 72)
        #expect(ports == source.mttyPortBytes)
        #expect(final == .endOfStream)
        #expect(try fd.readChunk(16).result == .endOfStream)
    }

    @Test("A full mtty save in PRE_COPY then STOP_COPY, written to a second device in RESUMING, loads byte-identical")
    func mttyRoundTripIsByteIdentical() throws {
        let source = try SimulatedVFIODevice(.mtty(ports: 2, seed: 7), clock: ManualSimulationClock())
        let destination = try SimulatedVFIODevice(.mtty(ports: 2, seed: 99), clock: ManualSimulationClock())
        #expect(source.mttyPortBytes != destination.mttyPortBytes)
        let saveFD = try #require(try source.setState(.preCopy))
        let resumeFD = try #require(try destination.setState(.resuming))
        var stream = try saveFD.drain(chunk: 5).bytes
        try source.setState(.stopCopy)
        stream += try saveFD.drain(chunk: 5).bytes
        try resumeFD.write(stream)
        try destination.setState(.stop)

        #expect(stream == SimulatedVFIODevice.mttyBlob(ports: 2, portBytes: source.mttyPortBytes))
        #expect(destination.loadedBytes == stream)
        #expect(destination.loadedStreamDigest == source.savedStreamDigest)
        #expect(destination.loadedStreamDigest == VFIOStateDigest(of: stream))
        #expect(destination.mttyPortBytes == source.mttyPortBytes)
    }

    @Test("STOP→STOP_COPY gives all 96 mtty bytes at once")
    func mttyStopCopyFromStop() throws {
        let source = try SimulatedVFIODevice(.mtty(ports: 2), clock: ManualSimulationClock())
        try source.setState(.stop)
        let fd = try #require(try source.setState(.stopCopy))
        let (bytes, end) = try fd.drain()
        #expect(bytes == SimulatedVFIODevice.mttyBlob(ports: 2, portBytes: source.mttyPortBytes))
        #expect(end == .endOfStream)
    }

    @Test("mtty resume: bad header → EFAULT, one byte too many → ENOMEM, short stream → RESUMING→STOP fails EINVAL")
    func mttyResumeValidation() throws {
        let destination = try SimulatedVFIODevice(.mtty(ports: 2), clock: ManualSimulationClock())
        let fd = try #require(try destination.setState(.resuming))
        try fd.write(Self.mttyHeader2)
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: destination.name, errno: .noMemory)) {
            try fd.write([UInt8](repeating: 0, count: 73))
        }
        try fd.write([UInt8](repeating: 0, count: 71))
        #expect(throws: VFIOError.setStateFailed(device: destination.name, requested: .stop, errno: .invalidArgument, actual: .resuming)) {
            try destination.setState(.stop)
        }
        // The session is still alive: the last byte completes it and STOP commits.
        try fd.write([0])
        try destination.setState(.stop)
        #expect(destination.loadedBytes?.count == 96)
    }

    @Test("mtty resume: the write completing a bad header fails EFAULT but its bytes count, as on the kernel")
    func mttyBadHeaderBytesCount() throws {
        let destination = try SimulatedVFIODevice(.mtty(ports: 2), clock: ManualSimulationClock())
        let fd = try #require(try destination.setState(.resuming))
        var badHeader = Self.mttyHeader2
        badHeader[16] = 1  // nr_ports 1 on a 2-port device
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: destination.name, errno: .badAddress)) {
            try fd.write(badHeader)
        }
        #expect(destination.resumeBytesReceived == 24)
        // A good header now would be bytes 24..<48: the rest of the stream is only 72 bytes.
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: destination.name, errno: .noMemory)) {
            try fd.write([UInt8](repeating: 0, count: 73))
        }
        let ports = [UInt8](repeating: 7, count: 72)
        try fd.write(ports)
        // RESUMING→STOP checks only the size, as mtty: the client must treat EFAULT as fatal itself.
        try destination.setState(.stop)
        #expect(destination.loadedBytes == badHeader + ports)
        #expect(destination.mttyPortBytes == ports)
    }

    // MARK: mlx5

    static func records(_ stream: [UInt8]) -> [(size: UInt64, flags: UInt32, tag: UInt32)] {
        var result: [(UInt64, UInt32, UInt32)] = []
        var offset = 0
        while offset + 16 <= stream.count {
            let size = LittleEndianBytes.load(UInt64.self, from: stream, at: offset)
            result.append(
                (
                    size, LittleEndianBytes.load(UInt32.self, from: stream, at: offset + 8),
                    LittleEndianBytes.load(UInt32.self, from: stream, at: offset + 12)
                ))
            offset += 16 + Int(size)
        }
        return result
    }

    @Test("mlx5: STOP_COPY_SIZE record, initial image, ENOMSG, incremental images started by PRECOPY_INFO, final image")
    func mlx5RecordStream() throws {
        let clock = ManualSimulationClock()
        let source = try SimulatedVFIODevice(
            .mlx5(imageSize: 4096, finalImageSize: 512, seed: 3, dirtyBytesPerSecond: 1000), clock: clock)
        let fd = try #require(try source.setState(.preCopy))
        #expect(try fd.precopyInfo() == VFIOPrecopyInfo(initialBytes: 24 + 16 + 4096, dirtyBytes: 0))
        let (initial, pause) = try fd.drain(chunk: 1000)
        #expect(initial.count == 4136)
        #expect(Array(initial[0..<24]) == [8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0])
        #expect(Array(initial[24..<40]) == [0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(pause == .drainedForNow)

        clock.advance(by: .seconds(2))
        // Reading alone makes no progress: only PRECOPY_INFO starts the next incremental save.
        #expect(try fd.readChunk(64).result == .drainedForNow)
        #expect(try fd.precopyInfo() == VFIOPrecopyInfo(initialBytes: 0, dirtyBytes: 16 + 2000))
        let (incremental, _) = try fd.drain()
        #expect(incremental.count == 2016)
        #expect(try fd.precopyInfo() == VFIOPrecopyInfo(initialBytes: 0, dirtyBytes: 0))

        clock.advance(by: .seconds(1))
        #expect(try source.stopCopySize() == 16 + 512 + 1000)
        try source.setState(.stopCopy)
        let (final, end) = try fd.drain()
        #expect(end == .endOfStream)
        let stream = initial + incremental + final
        #expect(Self.records(stream).map(\.size) == [8, 4096, 2000, 1512])
        #expect(Self.records(stream).map(\.tag) == [1, 0, 0, 0])
        #expect(Self.records(stream).map(\.flags) == [1, 0, 0, 0])
        #expect(source.savedStreamDigest == VFIOStateDigest(of: stream))
    }

    @Test("mlx5 destination loads each image inside write() and spends the configured load cost")
    func mlx5DestinationLoadCost() throws {
        let sourceClock = ManualSimulationClock()
        let source = try SimulatedVFIODevice(
            .mlx5(imageSize: 8192, finalImageSize: 100, seed: 11, dirtyBytesPerSecond: 50), clock: sourceClock)
        let destinationClock = ManualSimulationClock()
        let destination = try SimulatedVFIODevice(
            .mlx5(seed: 12, loadCost: .init(initial: .seconds(3), final: .milliseconds(250))), clock: destinationClock)
        let saveFD = try #require(try source.setState(.preCopy))
        let resumeFD = try #require(try destination.setState(.resuming))

        try resumeFD.write(try saveFD.drain(chunk: 777).bytes)
        #expect(destinationClock.sleeps == [.seconds(3)])
        sourceClock.advance(by: .seconds(4))
        _ = try saveFD.precopyInfo()
        try resumeFD.write(try saveFD.drain(chunk: 777).bytes)
        try source.setState(.stopCopy)
        try resumeFD.write(try saveFD.drain(chunk: 777).bytes)
        try destination.setState(.stop)

        #expect(destinationClock.sleeps == [.seconds(3), .milliseconds(250), .milliseconds(250)])
        #expect(destination.loadedImageCount == 3)
        #expect(destination.loadedStreamDigest == source.savedStreamDigest)
    }

    @Test("mlx5 resume: optional unknown record skipped, mandatory unknown → EOPNOTSUPP then ENODEV, oversize → ENOMEM")
    func mlx5ResumeRecordRules() throws {
        let destination = try SimulatedVFIODevice(.mlx5(), clock: ManualSimulationClock())
        let fd = try #require(try destination.setState(.resuming))
        try fd.write(MLX5Record.header(size: 3, flags: 1, tag: 42) + [1, 2, 3])
        try fd.write(MLX5Record.header(size: 2, flags: 0, tag: 0) + [9, 9])
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: destination.name, errno: .notSupportedOnSocket)) {
            try fd.write(MLX5Record.header(size: 1, flags: 0, tag: 42))
        }
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: destination.name, errno: .operationNotSupportedByDevice)) {
            try fd.write([0])
        }
        try destination.reset()
        let second = try #require(try destination.setState(.resuming))
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: destination.name, errno: .noMemory)) {
            try second.write(MLX5Record.header(size: 1 << 32, flags: 0, tag: 0))
        }
    }

    @Test("A short mlx5 resume still commits on RESUMING→STOP, as mlx5 validates nothing there")
    func mlx5ShortResumeCommits() throws {
        let destination = try SimulatedVFIODevice(.mlx5(), clock: ManualSimulationClock())
        let fd = try #require(try destination.setState(.resuming))
        try fd.write(MLX5Record.header(size: 100, flags: 0, tag: 0) + [1, 2])
        try destination.setState(.stop)
        #expect(destination.loadedImageCount == 0)
        #expect(destination.currentState == .stop)
    }

    // MARK: opaque

    @Test("A 4 MiB opaque state streams in 1 MiB chunks and loads byte-identical, keeping only its digest")
    func opaqueLargeRoundTrip() throws {
        let size: UInt64 = 4 << 20
        let source = try SimulatedVFIODevice(.opaque(size: size, initialBytes: 40, seed: 5), clock: ManualSimulationClock())
        let destination = try SimulatedVFIODevice(.opaque(size: size, initialBytes: 40, seed: 6), clock: ManualSimulationClock())
        let saveFD = try #require(try source.setState(.preCopy))
        let resumeFD = try #require(try destination.setState(.resuming))
        #expect(try saveFD.precopyInfo() == VFIOPrecopyInfo(initialBytes: 40, dirtyBytes: 0))
        let (initial, pause) = try saveFD.drain(chunk: 32)
        #expect(initial.count == 40)
        #expect(pause == .drainedForNow)
        try resumeFD.write(initial)
        try source.setState(.stopCopy)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { buffer.deallocate() }
        var hasher = VFIOStateHasher()
        hasher.update(initial)
        while case .bytes(let n) = try saveFD.read(into: buffer) {
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            hasher.update(chunk)
            try resumeFD.write(chunk)
        }
        try destination.setState(.stop)
        #expect(destination.loadedStreamDigest == hasher.finalize())
        #expect(destination.loadedStreamDigest == source.savedStreamDigest)
        #expect(destination.loadedStreamDigest?.byteCount == size)
        #expect(destination.loadedBytes == nil)
    }

    @Test("A short opaque resume then STOP fails EINVAL and the device stays in RESUMING")
    func opaqueShortResumeFails() throws {
        let destination = try SimulatedVFIODevice(.opaque(size: 128), clock: ManualSimulationClock())
        let fd = try #require(try destination.setState(.resuming))
        try fd.write([UInt8](repeating: 1, count: 127))
        #expect(throws: VFIOError.setStateFailed(device: destination.name, requested: .running, errno: .invalidArgument, actual: .resuming))
        {
            try destination.setState(.running)
        }
        #expect(destination.loadedStreamDigest == nil)
    }

    @Test("Content is deterministic from the seed")
    func contentIsDeterministic() throws {
        func save(seed: UInt64) throws -> [UInt8] {
            let device = try SimulatedVFIODevice(.opaque(size: 300, seed: seed), clock: ManualSimulationClock())
            try device.setState(.stop)
            return try #require(try device.setState(.stopCopy)).drain(chunk: 64).bytes
        }
        #expect(try save(seed: 1) == save(seed: 1))
        #expect(try save(seed: 1) != save(seed: 2))
    }

    // MARK: Data fd semantics

    @Test("Data fds are real close-on-exec fds; positional I/O fails ESPIPE")
    func dataFDIsARealStream() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let fd = try #require(try device.setState(.preCopy))
        let raw = try #require(fd.fileDescriptor).rawValue
        #expect(fcntl(raw, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(try #require(device.deviceFileDescriptor).rawValue, F_GETFD) & FD_CLOEXEC != 0)
        var bytes = [UInt8](repeating: 0, count: 4)
        #expect(errnoOf { bytes.withUnsafeMutableBytes { VFIOSystem.live.pread(raw, into: $0, offset: 0) } } == .illegalSeek)
        #expect(errnoOf { bytes.withUnsafeBytes { VFIOSystem.live.pwrite(raw, from: $0, offset: 0) } } == .illegalSeek)
        #expect(errnoOf { VFIOSystem.live.lseek(raw, 0, SEEK_SET) } == .illegalSeek)
        // Even bypassing the seam, the real fd is a stream.
        #expect(lseek(raw, 0, SEEK_SET) == -1)
        #expect(errno == ESPIPE)
    }

    @Test("A save fd is read-only, a resume fd write-only, and PRECOPY_INFO exists only on save fds")
    func dataFDDirections() throws {
        let source = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let saveFD = try #require(try source.setState(.preCopy))
        #expect(throws: VFIOError.syscallFailed(operation: .write, device: source.name, errno: .badFileDescriptor)) {
            try saveFD.write([1])
        }
        let destination = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let resumeFD = try #require(try destination.setState(.resuming))
        #expect(throws: VFIOError.syscallFailed(operation: .read, device: destination.name, errno: .badFileDescriptor)) {
            try resumeFD.readChunk(8)
        }
        #expect(
            throws: VFIOError.featureUnsupported(operation: .precopyInfo, device: destination.name, errno: .inappropriateIOCTLForDevice)
        ) {
            try resumeFD.precopyInfo()
        }
    }

    @Test("Data fds fail ENODEV once their session ends and after reset; a closed fd object refuses calls")
    func dataFDLifetime() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let first = try #require(try device.setState(.preCopy))
        try device.setState(.running)
        #expect(throws: VFIOError.syscallFailed(operation: .read, device: device.name, errno: .operationNotSupportedByDevice)) {
            try first.readChunk(8)
        }
        let second = try #require(try device.setState(.preCopy))
        try device.reset()
        #expect(try device.deviceState() == .running)
        #expect(throws: VFIOError.syscallFailed(operation: .read, device: device.name, errno: .operationNotSupportedByDevice)) {
            try second.readChunk(8)
        }
        try second.close()
        try second.close()
        #expect(second.isClosed)
        #expect(throws: VFIOError.dataFDClosed(operation: .read, device: device.name)) { try second.readChunk(8) }
    }

    @Test("Closing a data fd early leaves the device state alone")
    func closingDataFDKeepsState() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let fd = try #require(try device.setState(.preCopy))
        try fd.close()
        #expect(try device.deviceState() == .preCopy)
    }

    @Test("PRECOPY_INFO outside PRE_COPY states is a typed error")
    func precopyInfoOnlyInPreCopy() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        let fd = try #require(try device.setState(.preCopy))
        try device.setState(.preCopyP2P)
        #expect(try fd.precopyInfo() == VFIOPrecopyInfo(initialBytes: 24, dirtyBytes: 0))
        try device.setState(.stopCopy)
        #expect(throws: VFIOError.notInPreCopy(device: device.name)) { try fd.precopyInfo() }
    }

    @Test("Initial bytes count down as data is read")
    func initialBytesCountDown() throws {
        let device = try SimulatedVFIODevice(.opaque(size: 100, initialBytes: 30), clock: ManualSimulationClock())
        let fd = try #require(try device.setState(.preCopy))
        var seen: [UInt64] = []
        for _ in 0..<4 {
            seen.append(try fd.precopyInfo().initialBytes)
            _ = try fd.readChunk(10)
        }
        #expect(seen == [30, 20, 10, 0])
    }

    @Test("Requesting the current state is a no-op without an fd")
    func sameStateIsNoOp() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        try device.setState(.stop)
        let fd = try device.setState(.stopCopy)
        device.clearRecordedArcs()
        #expect(try device.setState(.stopCopy) == nil)
        #expect(device.recordedArcs.isEmpty)
        #expect(fd != nil)
    }

    // MARK: MIG_DATA_SIZE

    @Test("MIG_DATA_SIZE exact: what a STOP_COPY would still produce")
    func stopCopySizeExact() throws {
        let device = try SimulatedVFIODevice(.mtty(ports: 2), clock: ManualSimulationClock())
        #expect(try device.stopCopySize() == 96)
        let fd = try #require(try device.setState(.preCopy))
        _ = try fd.drain()
        #expect(try device.stopCopySize() == 72)
        try device.setState(.stopCopy)
        _ = try fd.drain()
        #expect(try device.stopCopySize() == 0)
    }

    @Test("MIG_DATA_SIZE growing estimate rises with time spent RUNNING; constant never moves")
    func stopCopySizeGrowingAndConstant() throws {
        let clock = ManualSimulationClock()
        var growing = SimulatedVFIOConfiguration.opaque(size: 1000)
        growing.dataSize = .growingEstimate
        growing.dirtyBytesPerSecond = 300
        let device = try SimulatedVFIODevice(growing, clock: clock)
        #expect(try device.stopCopySize() == 1000)
        clock.advance(by: .milliseconds(1500))
        #expect(try device.stopCopySize() == 1450)
        try device.setState(.stop)
        clock.advance(by: .seconds(10))
        #expect(try device.stopCopySize() == 1450)

        var constant = SimulatedVFIOConfiguration.opaque(migration: [.stopCopy, .p2p], size: 300)
        constant.dataSize = .constant(65536)
        let pds = try SimulatedVFIODevice(constant, clock: clock)
        #expect(try pds.stopCopySize() == 65536)
        try pds.setState(.stop)
        _ = try #require(try pds.setState(.stopCopy)).drain()
        #expect(try pds.stopCopySize() == 65536)
    }
}
