import MigrationCore
import MigrationStream
import Synchronization
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// The config state in QEMU 10's vmstate_vfio_pci_config layout (docs/wire-format.md, "The config state").
@Suite struct QEMUPCIConfigStateTests {
    /// A 256-byte config space with a vendor/device id, COMMAND 0x0107 and two I/O BARs.
    static let space: [UInt8] = {
        var bytes = [UInt8](repeating: 0, count: 256)
        bytes[0..<4] = [0x48, 0x43, 0x53, 0x32]
        bytes[4..<6] = [0x07, 0x01]
        bytes[0x10..<0x14] = [0x01, 0xc0, 0x00, 0x00]
        bytes[0x14..<0x18] = [0x09, 0xc0, 0x00, 0x00]
        return bytes
    }()

    @Test("A PCIe device saves version 2, 4096 bytes of config space (the device's 256, then zeros) and four INTx levels of 0: 4116 bytes")
    func saveLayout() throws {
        let state = QEMUPCIConfigState(express: true, read: { Self.space })
        let bytes = try state.save()
        #expect(state.byteCount == 4116)
        #expect(bytes.count == 4116)
        #expect(Array(bytes[0..<4]) == [0, 0, 0, 2])
        #expect(Array(bytes[4..<260]) == Self.space)
        #expect(bytes[260..<4100].allSatisfy { $0 == 0 })
        #expect(bytes[4100..<4116].allSatisfy { $0 == 0 })
        let conventional = QEMUPCIConfigState(express: false, read: { Self.space })
        #expect(try conventional.save().count == 276)
    }

    @Test("Load writes COMMAND without I/O and memory decoding, the six BARs, then COMMAND as received, as QEMU's loader does")
    func loadWritesInQEMUsOrder() throws {
        let writes = Mutex<[(Int, [UInt8])]>([])
        let source = QEMUPCIConfigState(read: { Self.space })
        let destination = QEMUPCIConfigState(read: { [] }, write: { offset, bytes in writes.withLock { $0.append((offset, bytes)) } })
        try destination.load(try source.save())
        let log = writes.withLock { $0 }
        #expect(log.map(\.0) == [0x04, 0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x04])
        #expect(log.first?.1 == [0x04, 0x01])
        #expect(log[1].1 == [0x01, 0xc0, 0x00, 0x00])
        #expect(log.last?.1 == [0x07, 0x01])
        #expect(destination.lastLoaded?.version == 2)
        #expect(destination.lastLoaded?.configSpace.prefix(256).elementsEqual(Self.space) == true)
    }

    @Test("A version above QEMU's, an INTx level other than 0 or 1, or a wrong size is refused before any write")
    func refusals() throws {
        let writes = Mutex(0)
        let state = QEMUPCIConfigState(read: { Self.space }, write: { _, _ in writes.withLock { $0 += 1 } })
        var bytes = try state.save()
        bytes[3] = 3
        #expect(throws: QEMUPCIConfigState.Refusal.self) { try state.load(bytes) }
        bytes[3] = 2
        bytes[4100 + 7] = 2
        #expect(throws: QEMUPCIConfigState.Refusal.self) { try state.load(bytes) }
        #expect(throws: QEMUPCIConfigState.Refusal.self) { try state.load(Array(bytes.prefix(276))) }
        #expect(writes.withLock { $0 } == 0)
    }

    @Test("The generic handler carries it through a FULL section between simulated mtty devices")
    func handlerCarriesIt() throws {
        let src = try SimulatedVFIODevice(.mtty(name: "0000:00:04.0", seed: 3))
        let dst = try SimulatedVFIODevice(.mtty(name: "0000:00:04.0", seed: 9))
        let received = QEMUPCIConfigState(read: { [] })
        let source = VFIOPCIHandler(device: src, config: QEMUPCIConfigState(read: { Self.space }))
        let destination = VFIOPCIHandler(device: dst, config: received)
        _ = try HandlerHarness().migrate(source, destination, ack: true)
        #expect(received.lastLoaded?.configSpace.prefix(256).elementsEqual(Self.space) == true)
        #expect(dst.mttyPortBytes == src.mttyPortBytes)
    }
}

/// MSI-X in QEMU's layout: after the INTx levels, the table (16 bytes a vector) and the pending
/// bits ((vectors + 7) / 8 bytes), for a device whose config space has an MSI-X capability. mtty
/// has none; the simulated device gets one through `msixVectors`.
@Suite struct QEMUPCIConfigStateMSIXTests {
    static func msix(_ vectors: Int, seed: UInt8 = 1) -> QEMUPCIConfigState.MSIX {
        QEMUPCIConfigState.MSIX(
            table: (0..<(vectors * 16)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) },
            pendingBits: (0..<((vectors + 7) / 8)).map { UInt8(truncatingIfNeeded: $0 &+ Int(seed)) })
    }

    @Test func theVectorCountComesFromTheCapability() throws {
        var configuration = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2")
        configuration.msixVectors = 12
        #expect(QEMUPCIConfigState.msixVectors(in: configuration.pciConfigSpace) == 12)
        configuration.msixVectors = nil
        #expect(QEMUPCIConfigState.msixVectors(in: configuration.pciConfigSpace) == nil)
        // A capability list that loops, or points below 0x40, ends the walk.
        var looping = configuration.pciConfigSpace
        looping[0x06] |= 0x10
        looping[0x34] = 0x40
        looping[0x40] = 0x05
        looping[0x41] = 0x40
        #expect(QEMUPCIConfigState.msixVectors(in: looping) == nil)
        looping[0x41] = 0x10
        #expect(QEMUPCIConfigState.msixVectors(in: looping) == nil)
    }

    @Test("Table and pending bits follow the INTx levels: 4116 + 12·16 + 2 bytes for 12 vectors")
    func layout() throws {
        var configuration = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2")
        configuration.msixVectors = 12
        let space = configuration.pciConfigSpace
        let state = QEMUPCIConfigState(read: { space }, msixTable: { Self.msix($0) })
        #expect(state.byteCount == 4116 + 192 + 2)
        let bytes = try state.save()
        try #require(bytes.count == state.byteCount)
        #expect(Array(bytes[4116..<4308]) == Self.msix(12).table)
        #expect(Array(bytes[4308...]) == Self.msix(12).pendingBits)
    }

    @Test func withoutTheVMMsTableADeviceWithMSIXCannotBeSaved() throws {
        var configuration = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2")
        configuration.msixVectors = 4
        let space = configuration.pciConfigSpace
        #expect(throws: QEMUPCIConfigState.Refusal.self) { try QEMUPCIConfigState(read: { space }).save() }
        let short = QEMUPCIConfigState(read: { space }, msixTable: { _ in Self.msix(3) })
        #expect(throws: QEMUPCIConfigState.Refusal.self) { try short.save() }
    }

    @Test(
        "The generic handler carries the MSI-X state between simulated devices with the capability; the destination's VMM gets it after the BARs"
    )
    func handlerCarriesMSIX() throws {
        var configuration = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2", imageSize: 64 << 10, finalImageSize: 16 << 10)
        configuration.msixVectors = 9
        let src = try SimulatedVFIODevice(configuration)
        let dst = try SimulatedVFIODevice(configuration)
        let applied = Mutex<QEMUPCIConfigState.MSIX?>(nil)
        let source = VFIOPCIHandler(device: src, config: QEMUPCIConfigState(device: src, msixTable: { Self.msix($0, seed: 5) }))
        let receiving = QEMUPCIConfigState(device: dst, msixLoad: { msix in applied.withLock { $0 = msix } })
        let destination = VFIOPCIHandler(device: dst, config: receiving)
        let outcome = try HandlerHarness().migrate(source, destination, ack: true)
        #expect(applied.withLock { $0 } == Self.msix(9, seed: 5))
        #expect(receiving.lastLoaded?.msix?.vectors == 9)
        #expect(dst.loadedStreamDigest == src.savedStreamDigest)
        #expect(outcome.stream.count > 4116 + 9 * 16)
    }

    @Test func aDestinationWithoutTheCapabilityRefusesTheLongerState() throws {
        var configuration = SimulatedVFIOConfiguration.mlx5(name: "0000:3b:00.2", imageSize: 64 << 10, finalImageSize: 16 << 10)
        configuration.msixVectors = 2
        let src = try SimulatedVFIODevice(configuration)
        configuration.msixVectors = nil
        let dst = try SimulatedVFIODevice(configuration)
        let source = VFIOPCIHandler(device: src, config: QEMUPCIConfigState(device: src, msixTable: { Self.msix($0) }))
        let destination = VFIOPCIHandler(device: dst)
        #expect(throws: VFIOPCIHandlerError.self) { try HandlerHarness().migrate(source, destination, ack: true) }
    }
}
