import MLX5Handler
import MigrationCore
import MigrationStream
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// PRECOPY_INFO v2 and REINIT (the 2026 uAPI): a device whose initial data grows again during
/// pre-copy. The simulated mlx5 device reports a new initial image once its first one is read
/// (`reinitImageSize`); the source's handler opts in (`MIG_PRECOPY_INFOv2`) where the kernel
/// offers it and the peer is Switchover, announces the new initial data with REINIT, and sends
/// INIT_DATA_SENT again; the destination's handler withdraws its acknowledgement in between.
@Suite struct PrecopyReinitTests {
    static func configuration(v2: Bool, reinit: UInt64? = 48 << 10) -> SimulatedVFIOConfiguration {
        var c = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2", imageSize: 96 << 10, finalImageSize: 32 << 10, seed: 7)
        c.precopyInfoV2 = v2
        c.reinitImageSize = reinit
        return c
    }

    /// The source as the engine drives it: PARTs (with the exact pending query the engine makes
    /// between passes) until the device has reported REINIT and its new initial data is sent, or
    /// `parts` passes; then the switchover (END, FULL).
    static func save(_ handler: VFIOPCIHandler, parameters: MigrationParameters = MigrationParameters(), parts: Int = 24) throws -> [UInt8]
    {
        let ctx = RecordingContext(identity: handler.identity, ack: true)
        ctx.parameters = parameters
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        let id = handler.identity
        func section(_ kind: SectionKind, _ body: () throws -> Void) throws {
            try w.writeSectionHeader(SectionHeader(kind: kind, sectionID: 3, idstr: id.idstr, instanceID: 0, versionID: 1))
            try body()
            try w.writeFooter(sectionID: 3)
        }
        try handler.savePrepare(context: ctx)
        try section(.start) { try handler.saveSetup(to: w, context: ctx) }
        for _ in 0..<parts {
            try section(.part) { _ = try handler.saveIterate(to: w, context: ctx) }
            _ = try handler.pendingExact(context: ctx)
        }
        ctx.vmRunning = false
        try handler.prepareRunStateChange(.stop(.switchover))
        try handler.runStateChanged(.stop(.switchover))
        try section(.end) { try handler.saveComplete(to: w, context: ctx) }
        try section(.full) { try handler.saveState(to: w, context: ctx) }
        try w.flush()
        handler.saveCleanup(succeeded: true)
        return sink.bytes
    }

    @Test func newInitialDataRevokesTheDestinationsAcknowledgementUntilItIsSent() throws {
        let source = try SimulatedVFIODevice(Self.configuration(v2: true))
        let destination = try SimulatedVFIODevice(Self.configuration(v2: true))
        let sending = VFIOPCIHandler(device: source, tuning: MLX5Tuning())
        let receiving = VFIOPCIHandler(device: destination, tuning: MLX5Tuning())
        let stream = try Self.save(sending)
        #expect(sending.statistics.reinits == 1)
        #expect(count(.reinit, in: stream) == 1)
        #expect(count(.initDataSent, in: stream) == 2, "INIT_DATA_SENT after the first and after the new initial data")

        let ctx = try HandlerHarness().load(stream, into: receiving, ack: true)
        #expect(ctx.approvals == 2)
        #expect(ctx.revocations == 1, "the REINIT withdrew the first acknowledgement")
        #expect(receiving.statistics.revocations == 1)
        #expect(receiving.statistics.acknowledged, "acknowledged again after the new initial data")
        let saved = try #require(source.savedStreamDigest)
        #expect(destination.loadedStreamDigest == saved)
    }

    @Test func theREINITComesBeforeTheNewInitialDataAndAfterTheFirstINIT_DATA_SENT() throws {
        let sending = VFIOPCIHandler(device: try SimulatedVFIODevice(Self.configuration(v2: true)), tuning: MLX5Tuning())
        let stream = try Self.save(sending)
        let tags = vfioTags(in: stream)
        let reinit = try #require(tags.firstIndex(of: .reinit))
        let firstAck = try #require(tags.firstIndex(of: .initDataSent))
        let lastAck = try #require(tags.lastIndex(of: .initDataSent))
        #expect(firstAck < reinit && reinit < lastAck)
        #expect(tags[reinit + 1] == .dataState, "the new initial data follows at once")
    }

    /// A 6.12 kernel (no feature 12): the opt-in fails with ENOTTY, the new chunk is dirty data,
    /// and nothing beyond QEMU's format goes on the wire.
    @Test func withoutTheKernelsOptInTheNewChunkIsDirtyData() throws {
        let source = try SimulatedVFIODevice(Self.configuration(v2: false))
        #expect(try source.enablePrecopyInfoV2() == false)
        let destination = try SimulatedVFIODevice(Self.configuration(v2: false))
        let sending = VFIOPCIHandler(device: source, tuning: MLX5Tuning())
        let stream = try Self.save(sending)
        #expect(sending.statistics.reinits == 0)
        #expect(count(.reinit, in: stream) == 0)
        #expect(count(.initDataSent, in: stream) == 1)
        let receiving = VFIOPCIHandler(device: destination, tuning: MLX5Tuning())
        let ctx = try HandlerHarness().load(stream, into: receiving, ack: true)
        #expect(ctx.revocations == 0)
        #expect(destination.loadedStreamDigest == source.savedStreamDigest)
    }

    /// A QEMU peer (no extensions) cannot be told: the handler does not opt in, so the device keeps
    /// v1 semantics, and a QEMU destination never sees a tag it does not know.
    @Test func aQEMUPeerGetsNoREINIT() throws {
        let source = try SimulatedVFIODevice(Self.configuration(v2: true))
        var parameters = MigrationParameters()
        parameters.extensions = false
        let sending = VFIOPCIHandler(device: source, tuning: MLX5Tuning())
        let stream = try Self.save(sending, parameters: parameters)
        #expect(sending.statistics.reinits == 0)
        #expect(count(.reinit, in: stream) == 0)
        #expect(count(.initDataSent, in: stream) == 1)
    }

    @Test func aREINITOutsideAPartOrWithoutSwitchoverAckIsRefused() throws {
        let handler = VFIOPCIHandler(device: try SimulatedVFIODevice(Self.configuration(v2: true)))
        for (kind, ack) in [(SectionKind.full, true), (.part, false)] {
            let ctx = RecordingContext(identity: handler.identity, ack: ack)
            try handler.loadSetup(context: ctx)
            let header = SectionHeader(kind: kind, sectionID: 1, idstr: handler.identity.idstr, instanceID: 0, versionID: 1)
            let reader = StreamReader(source: MemoryByteSource(VFIOSectionTag.reinit.bytes + VFIOSectionTag.endOfState.bytes))
            #expect(throws: VFIOPCIHandlerError.self, "\(kind), ack \(ack)") {
                try handler.loadState(from: reader, header: header, context: ctx)
            }
            handler.loadCleanup(succeeded: false)
        }
    }
}

/// The VFIO tags of a stream's section bodies, in order (8-byte aligned scan of known tags).
func vfioTags(in bytes: [UInt8]) -> [VFIOSectionTag] {
    guard bytes.count >= 8 else { return [] }
    var tags: [VFIOSectionTag] = []
    var i = 0
    while i <= bytes.count - 8 {
        let raw = (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[i + $1]) }
        if let tag = VFIOSectionTag(rawValue: raw) {
            tags.append(tag)
            i += 8
        } else {
            i += 1
        }
    }
    return tags
}
