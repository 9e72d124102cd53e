// Throughput of the wire format on VFIO-style traffic: a START section (SETUP_STATE,
// END_OF_STATE) and an END section carrying 64 DATA chunks of 1 MiB, written with StreamWriter
// and read back with StreamReader, in memory and over a Unix socketpair (a writer thread and a
// reader thread). Beside it, in the same run and over the same socketpair, a raw write(2)/read(2)
// loop moves the same bytes; the "% of raw" metric is the stream's throughput over the raw one.
// And the same stream over TCP loopback in TLS 1.3 with mutual authentication beside plaintext
// TCP, alternating in the same iterations; "TLS % of plaintext" is the ratio (goal: 70 % or more).
import Benchmark
import Foundation
import MigrationCore
import MigrationScenarios
import MigrationStream
import MigrationTLS

#if canImport(Glibc)
import Glibc
#endif

let chunkSize = 1 << 20
let chunkCount = 64
let sectionID: UInt32 = 60
let device = SectionHeader(kind: .start, sectionID: sectionID, idstr: "0000:00:05.0/vfio", instanceID: 0, versionID: 1)

/// One VFIO device's state: the START and END sections.
func writeDeviceState(_ writer: StreamWriter, chunk: [UInt8]) throws {
    try writer.writeSectionHeader(device)
    try writer.writeVFIOTag(.setupState)
    try writer.writeVFIOTag(.endOfState)
    try writer.writeFooter(sectionID: sectionID)
    var end = device
    end.kind = .end
    try writer.writeSectionHeader(end)
    try chunk.withUnsafeBytes { bytes in
        for _ in 0..<chunkCount { try writer.writeVFIODataChunk(bytes) }
    }
    try writer.writeVFIOTag(.endOfState)
    try writer.writeFooter(sectionID: sectionID)
    try writer.flush()
}

/// Reads the two sections back, streaming each chunk into `buffer`; returns the data bytes.
func readDeviceState(_ reader: StreamReader, buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    var data = 0
    for _ in 0..<2 {
        guard case .section(let header) = try reader.readRecord() else { throw BenchmarkFailure.unexpected("record") }
        loop: while true {
            switch try reader.readVFIOTag() {
            case .dataState:
                let size = Int(try reader.readBE64())
                guard size <= buffer.count else { throw BenchmarkFailure.unexpected("chunk size \(size)") }
                try reader.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]))
                data += size
            case .setupState:
                continue
            case .endOfState:
                break loop
            default:
                throw BenchmarkFailure.unexpected("tag")
            }
        }
        try reader.readFooter(sectionID: header.sectionID)
    }
    return data
}

enum BenchmarkFailure: Error {
    case unexpected(String)
    case socket(Int32)
}

/// Runs `write` on a thread of its own and `read` on this one; returns the elapsed time.
func timedTransfer(write: @escaping @Sendable () throws -> Void, read: () throws -> Void) throws -> Duration {
    let done = DispatchSemaphore(value: 0)
    let failure = FailureBox()
    let clock = ContinuousClock()
    let start = clock.now
    let thread = Thread {
        do { try write() } catch { failure.set(error) }
        done.signal()
    }
    thread.start()
    try read()
    done.wait()
    let elapsed = clock.now - start
    if let error = failure.get() { throw error }
    return elapsed
}

final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var error: (any Error)?
    func set(_ e: any Error) { lock.withLock { error = e } }
    func get() -> (any Error)? { lock.withLock { error } }
}

/// A byte sink and source over one buffer allocated (and touched) up front, so the in-memory
/// figure measures the writer and reader, not the kernel handing out fresh pages to a growing array.
final class PreallocatedMemory: ByteSink, ByteSource {
    private let storage: UnsafeMutableRawBufferPointer
    private var written = 0
    private var readPosition = 0

    init(capacity: Int) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { storage.deallocate() }

    func reset() {
        written = 0
        readPosition = 0
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count <= storage.count - written else { throw BenchmarkFailure.unexpected("memory full") }
        UnsafeMutableRawBufferPointer(rebasing: storage[written..<written + bytes.count]).copyMemory(from: bytes)
        written += bytes.count
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, written - readPosition)
        guard n > 0 else { return 0 }
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[readPosition..<readPosition + n]))
        readPosition += n
        return n
    }
}

/// Counts the socket benchmark's rounds across its iterations.
final class RoundCounter: @unchecked Sendable {
    var count = 0
}

func megabytesPerSecond(_ bytes: Int, _ d: Duration) -> Int {
    let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    return Int(Double(bytes) / seconds / 1e6)
}

/// The encoded stream, so the raw loop moves exactly as many bytes as the stream does.
let encodedStream: [UInt8] = {
    let sink = MemoryByteSink()
    let chunk = [UInt8](repeating: 0xA5, count: chunkSize)
    try? writeDeviceState(StreamWriter(sink: sink), chunk: chunk)
    return sink.bytes
}()

/// A connected TCP loopback pair (writer end, reader end); TLS with the credentials in `tls`.
func loopbackPair(tls: String?) throws -> (any MigrationConnection, any MigrationConnection) {
    let listener = try TCPListener(host: "127.0.0.1", port: 0)
    defer { listener.close() }
    let plain = TCPTransport(host: "127.0.0.1", port: listener.port)
    let transport: any MigrationTransport = tls.map { TLSTransport(base: plain, configuration: TLSConfiguration(directory: $0)) } ?? plain
    let accepting: any MigrationListener =
        try tls.map {
            try TLSTransport(base: plain, configuration: TLSConfiguration(directory: $0)).secure(listener)
        } ?? listener
    let accepted = AcceptedBox()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        do { accepted.set(.success(try accepting.accept())) } catch { accepted.set(.failure(error)) }
        done.signal()
    }
    thread.start()
    let writer = try transport.connect()
    done.wait()
    return (writer, try accepted.get())
}

final class AcceptedBox: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<any MigrationConnection, any Error> = .failure(BenchmarkFailure.unexpected("not accepted"))
    func set(_ r: Result<any MigrationConnection, any Error>) { lock.withLock { result = r } }
    func get() throws -> any MigrationConnection { try lock.withLock { result }.get() }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput],
        warmupIterations: 2,
        maxDuration: .seconds(10),
        maxIterations: 30
    )

    let streamMBps = BenchmarkMetric.custom("stream MB/s", polarity: .prefersLarger, useScalingFactor: false)
    let rawMBps = BenchmarkMetric.custom("raw MB/s", polarity: .prefersLarger, useScalingFactor: false)
    let percentOfRaw = BenchmarkMetric.custom("stream % of raw", polarity: .prefersLarger, useScalingFactor: false)
    let memoryMBps = BenchmarkMetric.custom("memory MB/s", polarity: .prefersLarger, useScalingFactor: false)

    Benchmark(
        "Memory: write+read 64 x 1 MiB VFIO DATA chunks",
        configuration: .init(metrics: [.wallClock, memoryMBps, .mallocCountTotal])
    ) { benchmark in
        let chunk = [UInt8](repeating: 0xA5, count: chunkSize)
        let memory = PreallocatedMemory(capacity: encodedStream.count)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 8)
        defer { buffer.deallocate() }
        for _ in benchmark.scaledIterations {
            memory.reset()
            let clock = ContinuousClock()
            let start = clock.now
            try writeDeviceState(StreamWriter(sink: memory), chunk: chunk)
            let data = try readDeviceState(StreamReader(source: memory), buffer: buffer)
            guard data == chunkSize * chunkCount else { throw BenchmarkFailure.unexpected("data \(data)") }
            benchmark.measurement(memoryMBps, megabytesPerSecond(encodedStream.count, clock.now - start))
        }
    }

    let rounds = RoundCounter()
    Benchmark(
        "Socket: StreamWriter/StreamReader vs raw write/read, 64 x 1 MiB DATA chunks",
        configuration: .init(metrics: [.wallClock, streamMBps, rawMBps, percentOfRaw])
    ) { benchmark in
        var fds: [Int32] = [0, 0]
        #if canImport(Glibc)
        let streamType = Int32(SOCK_STREAM.rawValue)
        #else
        let streamType = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, streamType, 0, &fds) == 0 else { throw BenchmarkFailure.socket(errno) }
        defer {
            close(fds[0])
            close(fds[1])
        }
        let (writeFD, readFD) = (fds[0], fds[1])
        let chunk = [UInt8](repeating: 0xA5, count: chunkSize)
        let total = encodedStream.count
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 8)
        defer { buffer.deallocate() }

        for _ in benchmark.scaledIterations {
            rounds.count += 1
            // Through the wire format.
            let viaStream = {
                try timedTransfer(
                    write: {
                        try writeDeviceState(StreamWriter(sink: FileDescriptorByteSink(fd: writeFD)), chunk: chunk)
                    },
                    read: {
                        let data = try readDeviceState(StreamReader(source: FileDescriptorByteSource(fd: readFD)), buffer: buffer)
                        guard data == chunkSize * chunkCount else { throw BenchmarkFailure.unexpected("data \(data)") }
                    })
            }
            // As many bytes, raw, over the same socket: write(2) of the same 1 MiB buffer the
            // stream sends its chunks from (so both read warm memory), read(2) into 1 MiB.
            let viaRaw = {
                try timedTransfer(
                    write: {
                        try chunk.withUnsafeBytes { bytes in
                            var done = 0
                            while done < total {
                                let n = write(writeFD, bytes.baseAddress!, min(chunkSize, total - done))
                                guard n > 0 else { throw BenchmarkFailure.socket(errno) }
                                done += n
                            }
                        }
                    },
                    read: {
                        var done = 0
                        while done < total {
                            let n = read(readFD, buffer.baseAddress!, min(chunkSize, total - done))
                            guard n > 0 else { throw BenchmarkFailure.socket(errno) }
                            done += n
                        }
                    })
            }
            // Alternate which goes first, so neither gains from the other's warm-up.
            let stream: Duration
            let raw: Duration
            if rounds.count % 2 == 0 {
                stream = try viaStream()
                raw = try viaRaw()
            } else {
                raw = try viaRaw()
                stream = try viaStream()
            }
            let streamRate = megabytesPerSecond(total, stream)
            let rawRate = megabytesPerSecond(total, raw)
            benchmark.measurement(streamMBps, streamRate)
            benchmark.measurement(rawMBps, rawRate)
            benchmark.measurement(percentOfRaw, streamRate * 100 / max(rawRate, 1))
        }
    }

    let plainMBps = BenchmarkMetric.custom("plaintext MB/s", polarity: .prefersLarger, useScalingFactor: false)
    let tlsMBps = BenchmarkMetric.custom("TLS MB/s", polarity: .prefersLarger, useScalingFactor: false)
    let tlsPercent = BenchmarkMetric.custom("TLS % of plaintext", polarity: .prefersLarger, useScalingFactor: false)
    let tlsRounds = RoundCounter()
    Benchmark(
        "TCP loopback: the main stream in TLS 1.3 (mutual x509 auth) vs plaintext, 64 x 1 MiB DATA chunks",
        configuration: .init(metrics: [.wallClock, plainMBps, tlsMBps, tlsPercent])
    ) { benchmark in
        let credentials = try BenchmarkTLS.makeCredentials()
        defer { try? FileManager.default.removeItem(atPath: credentials) }
        let (plainOut, plainIn) = try loopbackPair(tls: nil)
        let (tlsOut, tlsIn) = try loopbackPair(tls: credentials)
        defer { for c in [plainOut, plainIn, tlsOut, tlsIn] { c.close() } }
        let chunk = [UInt8](repeating: 0xA5, count: chunkSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 8)
        defer { buffer.deallocate() }
        func transfer(_ out: any MigrationConnection, _ into: any MigrationConnection) throws -> Duration {
            try timedTransfer(
                write: {
                    try writeDeviceState(StreamWriter(sink: out), chunk: chunk)
                },
                read: {
                    let data = try readDeviceState(StreamReader(source: into), buffer: buffer)
                    guard data == chunkSize * chunkCount else { throw BenchmarkFailure.unexpected("data \(data)") }
                })
        }
        for _ in benchmark.scaledIterations {
            tlsRounds.count += 1
            // Alternate which goes first, so neither gains from the other's warm-up.
            let plain: Duration
            let tls: Duration
            if tlsRounds.count % 2 == 0 {
                plain = try transfer(plainOut, plainIn)
                tls = try transfer(tlsOut, tlsIn)
            } else {
                tls = try transfer(tlsOut, tlsIn)
                plain = try transfer(plainOut, plainIn)
            }
            let plainRate = megabytesPerSecond(encodedStream.count, plain)
            let tlsRate = megabytesPerSecond(encodedStream.count, tls)
            benchmark.measurement(plainMBps, plainRate)
            benchmark.measurement(tlsMBps, tlsRate)
            benchmark.measurement(tlsPercent, tlsRate * 100 / max(plainRate, 1))
        }
    }
}
