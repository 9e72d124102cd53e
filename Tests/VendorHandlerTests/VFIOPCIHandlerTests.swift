import DeviceMatch
import MLX5Handler
import MigrationCore
import MigrationStream
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

@Suite struct VFIOPCIHandlerTests {
    let harness = HandlerHarness()

    @Test(arguments: [true, false])
    func mlx5StateArrivesByteIdentical(ack: Bool) throws {
        let config = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2", imageSize: 3 << 20, finalImageSize: 512 << 10, seed: 42)
        let src = try SimulatedVFIODevice(config)
        var destConfig = config
        destConfig.seed = 7
        let dst = try SimulatedVFIODevice(destConfig)
        let source = MLX5Module.makeHandler(device: src)
        let destination = MLX5Module.makeHandler(device: dst)
        let outcome = try harness.migrate(source, destination, ack: ack, pieces: [4093, 1 << 20])
        #expect(dst.loadedStreamDigest == src.savedStreamDigest)
        #expect(dst.loadedStreamDigest != nil)
        #expect(try dst.deviceState() == .running)
        #expect(try src.deviceState() == .stop)
        #expect(outcome.destinationContext.approvals == (ack ? 1 : 0))
        #expect(count(.initDataSent, in: outcome.stream) == (ack ? 1 : 0))
        #expect(source.statistics.preCopyBytes > 0)
    }

    @Test func mttyStreamHasQEMUsSectionBodies() throws {
        let src = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0", seed: 3))
        let dst = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0", seed: 9))
        let source = VFIOPCIHandler(device: src)
        let destination = VFIOPCIHandler(device: dst)
        #expect(src.mttyPortBytes != dst.mttyPortBytes)
        let outcome = try harness.migrate(source, destination, ack: true)
        #expect(dst.mttyPortBytes == src.mttyPortBytes)

        // START: header (14 + 17 bytes of idstr), SETUP_STATE, END_OF_STATE, footer.
        let idstr = Array("0000:00:05.0/vfio".utf8)
        var start: [UInt8] = [0x01, 0, 0, 0, 7, UInt8(idstr.count)] + idstr + [0, 0, 0, 0, 0, 0, 0, 1]
        start += VFIOSectionTag.setupState.bytes + VFIOSectionTag.endOfState.bytes + [0x7e, 0, 0, 0, 7]
        #expect(Array(outcome.stream.prefix(start.count)) == start)
        // First PART: the 24-byte mtty header as one DATA chunk, then INIT_DATA_SENT.
        let part = Array(outcome.stream[start.count..<start.count + 5 + 16 + 24 + 8 + 5])
        #expect(Array(part[0..<5]) == [0x02, 0, 0, 0, 7])
        #expect(Array(part[5..<13]) == VFIOSectionTag.dataState.bytes)
        #expect(Array(part[13..<21]) == [0, 0, 0, 0, 0, 0, 0, 24])
        #expect(Array(part[21..<29]) == [0x4e, 0x2c, 0x3e, 0x8c, 0x89, 0x09, 0x9d, 0x7e])
        #expect(Array(part[45..<53]) == VFIOSectionTag.initDataSent.bytes)
        #expect(outcome.destinationContext.approvals == 1)
    }

    @Test func aDeviceWithoutPreCopyMigratesInStopCopyOnly() throws {
        let config = SimulatedVFIOConfiguration.opaque(name: "0000:5e:00.1", migration: [.stopCopy, .p2p], size: 10_000, seed: 5)
        let src = try SimulatedVFIODevice(config)
        var d = config
        d.seed = 6
        let dst = try SimulatedVFIODevice(d)
        let source = VFIOPCIHandler(device: src)
        let destination = VFIOPCIHandler(device: dst)
        let outcome = try harness.migrate(source, destination, ack: true)
        #expect(outcome.parts == 0)
        #expect(count(.initDataSent, in: outcome.stream) == 0)
        #expect(!destination.switchoverAckNeeded(context: outcome.destinationContext))
        #expect(dst.loadedStreamDigest == src.savedStreamDigest)
        #expect(source.statistics.stopCopyBytes == 10_000)
    }

    @Test func aFailedStopCopyPutsTheSourceDeviceBackToRunning() throws {
        let src = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0"))
        src.injectFailure(.init(from: .preCopyP2P, to: .stopCopy))
        let source = VFIOPCIHandler(device: src)
        #expect(throws: VFIOPCIHandlerError.self) { _ = try harness.save(source, ack: false) }
        #expect(try src.deviceState() == .running)
    }

    @Test func initDataSentWithoutSwitchoverAckIsRefused() throws {
        let src = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0"))
        let dst = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0", seed: 2))
        let saved = try harness.save(VFIOPCIHandler(device: src), ack: true)
        let destination = VFIOPCIHandler(device: dst)
        #expect {
            _ = try harness.load(saved.bytes, into: destination, ack: false)
        } throws: { error in
            guard case VFIOPCIHandlerError.unexpectedInitDataSent(let device, _) = error else { return false }
            return device == "0000:00:05.0"
        }
        // The failed load left nothing half-done: the destination device was reset to RUNNING.
        #expect(try dst.deviceState() == .running)
    }

    @Test func anAbsurdChunkSizeIsRefusedBeforeAnyAllocation() throws {
        let dst = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0"))
        let handler = VFIOPCIHandler(device: dst)
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try w.writeSectionHeader(SectionHeader(kind: .part, sectionID: 1, idstr: handler.identity.idstr, instanceID: 0, versionID: 1))
        try w.writeVFIOTag(.dataState)
        try w.writeBE64(UInt64.max)
        try w.flush()
        let reader = StreamReader(source: MemoryByteSource(sink.bytes))
        let ctx = RecordingContext(identity: handler.identity, ack: false)
        try handler.loadSetup(context: ctx)
        _ = try reader.readU8()
        _ = try reader.readBE32()
        let header = SectionHeader(kind: .part, sectionID: 1, idstr: handler.identity.idstr, instanceID: 0, versionID: 1)
        #expect(throws: VFIOPCIHandlerError.self) { try handler.loadState(from: reader, header: header, context: ctx) }
        handler.loadCleanup(succeeded: false)
    }

    @Test(
        "CONFIG_LOAD_READY (QEMU 10.1) is a FULL section's whole body with multifd transfer and load-config-after-iter, refused without either, twice, or in a PART"
    )
    func configLoadReadyWithMultifd() throws {
        let dst = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0"))
        let handler = VFIOPCIHandler(device: dst, loadConfigAfterIterations: true)
        let tag = VFIOSectionTag.configLoadReady.bytes
        let full = SectionHeader(kind: .full, sectionID: 1, idstr: handler.identity.idstr, instanceID: 0, versionID: 1)
        let part = SectionHeader(kind: .part, sectionID: 1, idstr: handler.identity.idstr, instanceID: 0, versionID: 1)

        let multifd = RecordingContext(identity: handler.identity, ack: false, multifd: true)
        try handler.loadSetup(context: multifd)
        let reader = StreamReader(source: MemoryByteSource(tag + [0x7e]))
        try handler.loadState(from: reader, header: full, context: multifd)
        #expect(reader.offset == 8)
        #expect(throws: VFIOPCIHandlerError.self) {
            try handler.loadState(from: StreamReader(source: MemoryByteSource(tag)), header: part, context: multifd)
        }
        #expect(throws: VFIOPCIHandlerError.self, "a second CONFIG_LOAD_READY") {
            try handler.loadState(from: StreamReader(source: MemoryByteSource(tag)), header: full, context: multifd)
        }
        handler.loadCleanup(succeeded: false)

        // Off at this end (QEMU's default on x86): refused, as QEMU's "was disabled".
        let off = VFIOPCIHandler(device: dst)
        try off.loadSetup(context: multifd)
        #expect(throws: VFIOPCIHandlerError.self) {
            try off.loadState(from: StreamReader(source: MemoryByteSource(tag)), header: full, context: multifd)
        }
        off.loadCleanup(succeeded: false)

        let classic = RecordingContext(identity: handler.identity, ack: false)
        try handler.loadSetup(context: classic)
        #expect(throws: VFIOPCIHandlerError.self) {
            try handler.loadState(from: StreamReader(source: MemoryByteSource(tag)), header: full, context: classic)
        }
        handler.loadCleanup(succeeded: false)
    }

    @Test func anUnknownTagIsATypedErrorWithItsOffset() throws {
        let dst = try SimulatedVFIODevice(.mtty(name: "0000:00:05.0"))
        let handler = VFIOPCIHandler(device: dst)
        let ctx = RecordingContext(identity: handler.identity, ack: false)
        try handler.loadSetup(context: ctx)
        let reader = StreamReader(source: MemoryByteSource([0xff, 0xff, 0xff, 0xff, 0xef, 0x10, 0x00, 0x09]))
        let header = SectionHeader(kind: .part, sectionID: 1, idstr: handler.identity.idstr, instanceID: 0, versionID: 1)
        #expect {
            try handler.loadState(from: reader, header: header, context: ctx)
        } throws: { error in
            guard case VFIOPCIHandlerError.badSection(_, let offset, let reason) = error else { return false }
            return offset == 0 && reason.contains("unknown VFIO tag 0xffffffffef100009")
        }
        handler.loadCleanup(succeeded: false)
    }

    @Test func mlx5DestinationPreallocatesTheAnnouncedFinalImage() throws {
        let config = SimulatedVFIOConfiguration.mlx5(imageSize: 1 << 20, finalImageSize: 256 << 10)
        let src = try SimulatedVFIODevice(config)
        let dst = try SimulatedVFIODevice(config)
        let tuning = MLX5Tuning(maxPreallocation: 16 << 20)
        let destination = MLX5Module.makeHandler(device: dst, tuning: tuning)
        let saved = try harness.save(MLX5Module.makeHandler(device: src), ack: true)
        _ = try harness.load(saved.bytes, into: destination, ack: true)
        #expect(tuning.announcedStopCopySize > 0)
        #expect(tuning.preallocatedBytes == Int(min(tuning.announcedStopCopySize, 16 << 20)))
    }

    @Test func descriptorsComeFromTheMatchTables() {
        #expect(MLX5Module.descriptor.rules == [PCIMatchRuleFixture.mlx5])
        #expect(VFIOPCIHandler.descriptor.isGenericFallback)
        #expect(VFIOPCIHandler.descriptor.rules.compactMap(\.driver).contains("hisi_acc_vfio_pci"))
    }
}

enum PCIMatchRuleFixture {
    static let mlx5 = PCIMatchRule(vendorID: 0x15b3, deviceID: 0x101e, driver: "mlx5_vfio_pci")
}
