import DeviceMatch
import MigrationCore
import MigrationStream
import Synchronization
import VFIO

/// The generic VFIO-PCI handler: migrates any VFIO device with migration support through
/// the kernel uAPI v2, writing QEMU's VFIO section format byte for byte.
///
/// Source: START = SETUP_STATE, END_OF_STATE (and the device enters PRE_COPY when it can and
/// the guest runs); PART = at most one DATA chunk read from the save fd, then END_OF_STATE, or
/// INIT_DATA_SENT once when the initial bytes are all sent and switchover-ack is on. When the
/// guest stops (``/MigrationCore/VMRunState``) every device first enters PRE_COPY_P2P or RUNNING_P2P, and only
/// then STOP_COPY; END = DATA chunks until the end of the save stream, END_OF_STATE; FULL =
/// CONFIG_STATE, the config state, END_OF_STATE. On failure or cancel the device goes back to
/// RUNNING (or is reset when that fails). More than one VFIO device in a migration, one of them
/// without P2P, is refused in `savePrepare` unless ``/MigrationCore/MigrationParameters/allowDevicesWithoutP2P``.
///
/// Destination: RESUMING at load setup; every DATA chunk streamed into the resume fd; an
/// acknowledgement after INIT_DATA_SENT; RESUMING → STOP at load completion; RUNNING_P2P on
/// every device and then RUNNING when the guest starts.
///
/// Vendors tune it through a ``VFIOPCITuning`` rather than by copying it.
public final class VFIOPCIHandler: MigrationHandler, Sendable {
    /// QEMU's `VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE`.
    public static let defaultChunkSize = 1 << 20
    /// The largest DATA chunk a destination accepts (a bound on untrusted input, not a buffer size).
    public static let maxIncomingChunk: UInt64 = 1 << 32
    /// QEMU's `VFIO_MIG_STOP_COPY_SIZE`: the exact pending figure when MIG_DATA_SIZE fails,
    /// which in effect prevents the switchover.
    public static let unknownStopCopySize: UInt64 = 100 << 30
    /// The section version QEMU registers VFIO devices with.
    public static let sectionVersion: UInt32 = 1

    /// What the module declares for discovery: every VFIO variant driver with migration.
    public static let descriptor = VendorModuleDescriptor(
        name: "vfio-pci", rules: VFIODriversMatchTable.rules, isGenericFallback: true)

    public let device: VFIOMigrationDevice
    public let tuning: VFIOPCITuning
    public let config: VFIOPCIConfigState
    /// QEMU 10.1's `x-migration-load-config-after-iter` (on by default only for ARM hosts, whose
    /// interrupt controller must be restored before a device's MSI config): with multifd transfer,
    /// the source's FULL section is CONFIG_LOAD_READY alone, and the destination loads the config
    /// state (still the last multifd buffer) only once that FULL section has come, i.e. after every
    /// section before it. Both ends must agree, as in QEMU.
    public let loadConfigAfterIterations: Bool

    /// Everything the handler's hooks change, under one lock (the engine calls the hooks from its
    /// migration thread, the run-state hooks and statistics from others).
    struct State {
        var flags: VFIOMigrationFlags = []
        var dataFD: VFIOMigrationDataFD?
        var inPreCopy = false
        /// The device entered STOP_COPY when the guest stopped (``runStateChanged(_:)``).
        var stopCopyEntered = false
        var initialBytes: UInt64 = 0
        var dirtyBytes: UInt64 = 0
        var initialDataSent = false
        var buffer: DeviceDataBuffer?
        var counters = Counters()
        /// Destination, multifd with ``VFIOPCIHandler/loadConfigAfterIterations``: the FULL
        /// section's CONFIG_LOAD_READY has come; the config state it waits for, when its buffer came first.
        var configLoadReady = false
        var pendingConfig: [UInt8]?
        var configLoaded = false
        /// Source: the device reports REINIT (the PRECOPY_INFOv2 opt-in took, with a Switchover peer).
        var reportsReinit = false
        /// Source: a REINIT seen and not yet announced to the destination (the next PART's first tag).
        var reinitPending = false

        /// Takes fresh pre-copy sizes; a REINIT (only reported after the opt-in) means new
        /// initial data: INIT_DATA_SENT is due again once it is sent, and the destination is told first.
        mutating func absorb(_ info: VFIOPrecopyInfo) {
            initialBytes = info.initialBytes
            dirtyBytes = info.dirtyBytes
            guard info.reinit, reportsReinit else { return }
            reinitPending = true
            initialDataSent = false
            counters.reinits += 1
        }

        /// The handler's buffer, replaced by a larger one when `size` needs it. A caller that
        /// still uses the old buffer holds its reference, which keeps it alive.
        mutating func buffer(atLeast size: Int) -> DeviceDataBuffer {
            if let b = buffer, b.count >= size { return b }
            let b = DeviceDataBuffer(byteCount: size)
            buffer = b
            return b
        }
    }

    let state = Mutex(State())

    /// What the handler has moved, for statistics and tests.
    public struct Counters: Sendable, Hashable {
        public var preCopyBytes: UInt64 = 0
        public var stopCopyBytes: UInt64 = 0
        public var loadedBytes: UInt64 = 0
        public var chunks = 0
        public var initDataSent = false
        public var acknowledged = false
        /// Source: how often the device reported `VFIO_PRECOPY_INFO_REINIT` (new initial data).
        public var reinits = 0
        /// Destination: how often a REINIT withdrew this device's acknowledgement.
        public var revocations = 0
    }

    /// - Parameters:
    ///   - device: a kernel-backed or simulated VFIO device.
    ///   - config: the device's config-space state (FULL section); by default QEMU's layout
    ///     (``QEMUPCIConfigState``) over the device's VFIO config region when it can be read
    ///     (kernel and simulated devices), else a stand-in snapshot.
    ///   - tuning: a vendor module's tuning; QEMU's defaults otherwise.
    ///   - loadConfigAfterIterations: QEMU 10.1's `x-migration-load-config-after-iter`
    ///     (``loadConfigAfterIterations``); off as on QEMU's x86 hosts.
    public init(
        device: VFIOMigrationDevice, config: VFIOPCIConfigState? = nil, tuning: VFIOPCITuning = GenericVFIOPCITuning(),
        loadConfigAfterIterations: Bool = false
    ) {
        self.device = device
        self.config = config ?? Self.defaultConfig(for: device)
        self.tuning = tuning
        self.loadConfigAfterIterations = loadConfigAfterIterations
    }

    /// QEMU's layout over the device's config region when a one-byte read of it works (a probe at
    /// init: a device fd adopted from a VMM may have none we can reach); a stand-in otherwise.
    static func defaultConfig(for device: VFIOMigrationDevice) -> VFIOPCIConfigState {
        if let access = device as? any VFIOConfigSpaceAccess, (try? access.readConfigSpace(offset: 0, count: 1)) != nil {
            return QEMUPCIConfigState(device: access)
        }
        return PCIConfigSnapshot(simulatedFor: device.name)
    }

    /// QEMU's idstr for a VFIO device at a PCI address: "0000:00:05.0/vfio".
    public static func idstr(for address: String) -> String { address + VFIOSectionTag.idstrSuffix }

    /// The registration QEMU uses for this device.
    public var identity: HandlerIdentity {
        HandlerIdentity(idstr: Self.idstr(for: device.name), instanceID: 0, versionID: Self.sectionVersion)
    }

    /// A snapshot of what the handler has moved.
    public var statistics: Counters { state.withLock { $0.counters } }

    public var isLive: Bool { true }
    public var hasFullState: Bool { true }

    // MARK: Shared

    /// Probes the migration flags; refuses devices without migration or without STOP_COPY.
    func probeFlags(phase: String) throws -> VFIOMigrationFlags {
        let probed: VFIOMigrationFlags?
        do { probed = try device.migrationFlags() } catch { throw VFIOPCIHandlerError.device(device: device.name, phase: phase, error) }
        guard let probed else { throw VFIOPCIHandlerError.migrationUnsupported(device: device.name) }
        guard probed.contains(.stopCopy) else { throw VFIOPCIHandlerError.noStopCopy(device: device.name, flags: probed) }
        state.withLock { $0.flags = probed }
        return probed
    }

    @discardableResult
    func vfio<T>(_ phase: String, _ body: () throws(VFIOError) -> T) throws -> T {
        do { return try body() } catch { throw VFIOPCIHandlerError.device(device: device.name, phase: phase, error) }
    }

    func releaseSession() {
        let fd = state.withLock { s -> VFIOMigrationDataFD? in
            defer {
                s.dataFD = nil
                s.inPreCopy = false
                s.stopCopyEntered = false
            }
            return s.dataFD
        }
        try? fd?.close()
    }
}
