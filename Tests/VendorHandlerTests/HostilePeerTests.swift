import MLX5Handler
import MigrationCore
import MigrationStream
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// Streams a hostile source (or a crafted file) can send a destination's VFIO handlers.
@Suite struct HostilePeerTests {
    /// One mlx5 record: 16-byte little-endian header, then the payload.
    private func record(_ tag: MLX5RecordTag, optional: Bool, payload: [UInt8]) -> [UInt8] {
        MLX5RecordHeader(payloadSize: UInt64(payload.count), flags: optional ? MLX5RecordHeader.optionalFlag : 0, tag: tag).bytes + payload
    }

    private func stopCopySize(_ size: UInt64) -> [UInt8] {
        record(.stopCopySize, optional: true, payload: (0..<8).map { UInt8(truncatingIfNeeded: size >> (8 * UInt64($0))) })
    }

    /// The START section that opens section id 7 for the handler.
    private func start(id: HandlerIdentity) throws -> [UInt8] {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try w.writeSectionHeader(
            SectionHeader(kind: .start, sectionID: 7, idstr: id.idstr, instanceID: id.instanceID, versionID: id.versionID))
        try w.writeVFIOTag(.setupState)
        try w.writeVFIOTag(.endOfState)
        try w.writeFooter(sectionID: 7)
        try w.flush()
        return sink.bytes
    }

    /// A PART section of one DATA chunk for the handler.
    private func part(_ chunk: [UInt8], id: HandlerIdentity) throws -> [UInt8] {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try w.writeSectionHeader(
            SectionHeader(kind: .part, sectionID: 7, idstr: id.idstr, instanceID: id.instanceID, versionID: id.versionID))
        try chunk.withUnsafeBytes { try w.writeVFIODataChunk($0) }
        try w.writeVFIOTag(.endOfState)
        try w.writeFooter(sectionID: 7)
        try w.flush()
        return sink.bytes
    }

    /// The use-after-free of issue 13: mlx5's tuning lends its final-image buffer for a DATA
    /// chunk, and a larger STOP_COPY_SIZE inside that chunk made it free the buffer while the
    /// chunk was still read into it. The buffers here are ≥ 256 KiB, which malloc serves with
    /// mmap: a freed one is unmapped, so the old code crashed (SIGSEGV) even without ASan.
    @Test(arguments: [[], [4096], [300 << 10, 17]])
    func aLargerStopCopySizeInsideAChunkDoesNotFreeTheBufferInUse(pieces: [Int]) throws {
        let dst = try SimulatedVFIODevice(.mlx5(name: "0000:3b:00.2", imageSize: 1 << 20, finalImageSize: 1 << 20, seed: 1))
        let tuning = MLX5Tuning(maxPreallocation: 16 << 20)
        let handler = MLX5Module.makeHandler(device: dst, tuning: tuning)
        // First chunk: the source announces 256 KiB; the tuning pre-allocates that much and
        // offers it as the receive buffer for every later chunk.
        let first = stopCopySize(256 << 10)
        // Second chunk, received into that 256 KiB buffer: two STOP_COPY_SIZE records, the
        // second larger (the tuning replaces its buffer), then one optional record whose
        // payload fills the rest of the chunk and more than the old buffer.
        let filler = (0..<(700 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let second =
            stopCopySize(512 << 10) + stopCopySize(4 << 20) + record(MLX5RecordTag(rawValue: 0x77), optional: true, payload: filler)
        let bytes = try start(id: handler.identity) + part(first, id: handler.identity) + part(second, id: handler.identity)

        let ctx = RecordingContext(identity: handler.identity, ack: false)
        try handler.loadSetup(context: ctx)
        defer { handler.loadCleanup(succeeded: false) }
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: pieces))
        while try !reader.isAtEnd() {
            guard case .section(let header) = try reader.readRecord() else {
                Issue.record("not a section")
                return
            }
            try handler.loadState(from: reader, header: header, context: ctx)
            try reader.readFooter(sectionID: header.sectionID)
        }
        #expect(tuning.announcedStopCopySize == 4 << 20)
        #expect(tuning.preallocatedBytes == 4 << 20)
        // Through the protocol, as the handler sees it: the tuning's own buffer, not the default nil.
        #expect((tuning as any VFIOPCITuning).preferredReceiveBuffer?.count == 4 << 20)
        // Every byte reached the device, in order.
        #expect(dst.resumeBytesReceived == UInt64(first.count + second.count))
        #expect(handler.statistics.loadedBytes == UInt64(first.count + second.count))
    }

    /// The same records split over two DATA chunks: the buffer replaced between chunks.
    @Test func aLargerStopCopySizeInTheNextChunkSwitchesBuffers() throws {
        let dst = try SimulatedVFIODevice(.mlx5(name: "0000:3b:00.2", imageSize: 1 << 20, finalImageSize: 1 << 20, seed: 1))
        let tuning = MLX5Tuning(maxPreallocation: 16 << 20)
        let handler = MLX5Module.makeHandler(device: dst, tuning: tuning)
        let filler = [UInt8](repeating: 0x5a, count: 600 << 10)
        let chunks = [
            stopCopySize(256 << 10), stopCopySize(512 << 10),
            stopCopySize(4 << 20) + record(MLX5RecordTag(rawValue: 0x77), optional: true, payload: filler)
        ]
        var bytes = try start(id: handler.identity)
        for c in chunks { bytes += try part(c, id: handler.identity) }
        let ctx = RecordingContext(identity: handler.identity, ack: false)
        try handler.loadSetup(context: ctx)
        defer { handler.loadCleanup(succeeded: false) }
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: [1 << 20]))
        while try !reader.isAtEnd() {
            guard case .section(let header) = try reader.readRecord() else {
                Issue.record("not a section")
                return
            }
            try handler.loadState(from: reader, header: header, context: ctx)
            try reader.readFooter(sectionID: header.sectionID)
        }
        #expect(dst.resumeBytesReceived == UInt64(chunks.map(\.count).reduce(0, +)))
        #expect(tuning.preallocatedBytes == 4 << 20)
    }
}
