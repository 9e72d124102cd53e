import MigrationCore
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

extension VendorConformance {
    /// One device of a migration with its config state: the handler's
    /// (`QEMUPCIConfigState`, QEMU's layout over the device's config region) and the device.
    public struct MigratedDevice: Sendable {
        public var device: SimulatedVFIODevice
        public var config: QEMUPCIConfigState

        /// A simulated device and the config state its handler saves from or restores into.
        init(_ configuration: SimulatedVFIOConfiguration) throws {
            device = try SimulatedVFIODevice(configuration)
            config = QEMUPCIConfigState(device: device)
        }
    }

    /// Programs a source device's config space as a guest would have before the migration:
    /// memory decoding and bus mastering on, each BAR at an address of its own (its type bits
    /// kept). The destination device starts with the simulator's defaults, so a config state
    /// that did not arrive or was not written back shows as a difference.
    static func programAsGuest(_ device: SimulatedVFIODevice, seed: UInt64) throws {
        let command: UInt16 = 0x0006
        try device.writeConfigSpace(offset: 0x04, bytes: [UInt8(command & 0xff), UInt8(command >> 8)])
        for bar in 0..<6 {
            let at = 0x10 + 4 * bar
            let old = try device.readConfigSpace(offset: at, count: 4)
            let address = UInt32(0xE000_0000) | UInt32(truncatingIfNeeded: (seed &* 0x10 &+ UInt64(bar)) << 20)
            let value = (address & ~0xF) | UInt32(old[0] & 0xF)
            try device.writeConfigSpace(offset: at, bytes: (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) })
        }
    }

    /// The registers `vfio_pci_load_config` writes back to the device: COMMAND and the six BARs.
    static func restoredRegisters(_ device: SimulatedVFIODevice) throws -> [UInt8] {
        try device.readConfigSpace(offset: 0x04, count: 2) + device.readConfigSpace(offset: 0x10, count: 24)
    }

    /// Compares what the destination device holds after the load with the source device's
    /// state — not the bytes that crossed the wire:
    ///
    /// - payload: the destination committed a load (it left RESUMING) whose state equals what
    ///   the source device held (its saved-state digest; mtty: its port registers too);
    /// - config: the config state the destination's handler restored equals the source
    ///   device's config space, and the registers written back to the device (COMMAND, BARs)
    ///   equal the source device's.
    public func expectRestoredState(
        source: MigratedDevice, destination: MigratedDevice, _ what: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let restored = destination.device.loadedStreamDigest
        #expect(restored != nil, "\(what): the destination device committed no load", sourceLocation: sourceLocation)
        #expect(
            restored == source.device.savedStreamDigest, "\(what): the destination device's restored state differs from the source's",
            sourceLocation: sourceLocation)
        if case .mtty = source.device.configuration.payload {
            #expect(
                destination.device.mttyPortBytes == source.device.mttyPortBytes, "\(what): the mtty port registers differ",
                sourceLocation: sourceLocation)
        }
        let sourceSpace = try source.config.decode(source.config.save()).configSpace
        let loaded = destination.config.lastLoaded
        #expect(loaded != nil, "\(what): the destination restored no config state", sourceLocation: sourceLocation)
        #expect(
            loaded?.configSpace == sourceSpace, "\(what): the restored config space differs from the source device's",
            sourceLocation: sourceLocation)
        #expect(
            try Self.restoredRegisters(destination.device) == Self.restoredRegisters(source.device),
            "\(what): the destination device's COMMAND and BARs differ from the source device's", sourceLocation: sourceLocation)
    }
}
