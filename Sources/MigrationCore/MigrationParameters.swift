import MigrationStream

/// The knobs of one migration. Defaults follow QEMU where QEMU has the knob; the same
/// struct configures a source and a destination (each reads the fields that concern it).
public struct MigrationParameters: Sendable, Hashable {
    /// The longest the guest may stay stopped (QEMU `downtime-limit`, default 300 ms).
    public var downtimeLimit: Duration = .milliseconds(300)

    /// Bandwidth cap in bytes per second for the live phase, enforced per 100 ms window
    /// (cap / 10 bytes each); nil = no cap. QEMU's `max-bandwidth` defaults to 128 MiB/s;
    /// Switchover leaves it to the VMM. The completion is never limited.
    public var maxBandwidth: UInt64? = nil

    /// Bandwidth in bytes per second to assume for the switchover decision instead of the
    /// measured one (QEMU `avail-switchover-bandwidth`); nil = measure.
    public var switchoverBandwidth: UInt64? = nil

    /// Switchover-ack (QEMU capability `switchover-ack`): the source waits for the
    /// destination's acknowledgement before stopping the guest. Needs ``returnPath``. Both
    /// ends must agree: nothing on the wire checks it.
    public var switchoverAck = false

    /// Open the return path (QEMU capability `return-path`). Source only; ignored (off) on
    /// transports without a reverse direction (`file:`).
    public var returnPath = true

    /// Switchover's wire extensions (SWITCHOVER_HELLO, PREFLIGHT, LOAD_REPORT, ACK_STATE; see
    /// docs/wire-format.md). On a source: send them (the peer must be Switchover; turn this
    /// off to migrate to QEMU). On a destination: answer them when the source says hello.
    /// Needs the return path.
    public var extensions = true

    /// Add the destination's reported load time to the downtime prediction used for the
    /// switchover decision (our addition; QEMU assumes loading is free). Only when the
    /// destination sends load reports. Source only.
    public var countDestinationLoadTime = true

    /// Send QEMU 10's SWITCHOVER_START command before the END sections. Off by default: a
    /// QEMU 7.2–9.2 destination (and machine types ≤ 9.2) refuse it. Source only.
    public var sendSwitchoverStart = false

    /// Source: append the VMDESCRIPTION JSON after EOF (QEMU: unless `suppress-vmdesc`).
    /// Destination: expect and drain it after EOF. Both ends must agree.
    public var vmDescription = true

    /// No progress for this long is an error: a blocked read or write on the transport, the
    /// source sending nothing while not waiting for an acknowledgement, or an answer (PONG,
    /// pre-flight result, the destination's final SHUT) that does not come. nil = wait forever.
    public var stallTimeout: Duration? = .seconds(30)

    /// How long the source keeps iterating, with data small enough to switch over, while the
    /// switchover acknowledgement does not come (QEMU waits forever). nil = wait forever.
    /// Also lengthens the destination's wait between records (see docs/engine.md).
    public var switchoverTimeout: Duration? = .seconds(60)

    /// Source: how long the pending data may go without a new low (1 % under the lowest seen)
    /// before the migration counts as not converging — the guest dirties memory as fast as the
    /// link carries it, or the destination's predicted load time keeps the switchover out of
    /// reach. Time spent waiting for the switchover acknowledgement does not count. Reported
    /// in progress events (``MigrationProgress/converging``) and logged once; QEMU reports
    /// nothing of the kind. nil = never judged.
    public var convergenceWindow: Duration? = .seconds(10)

    /// Source: fail with a ``MigrationError/Code/notConverging`` error once the migration is judged not
    /// converging, instead of iterating until cancelled (QEMU's behaviour and the default).
    /// The guest keeps running on the source.
    public var abortWhenNotConverging = false

    /// Destination: start the guest after a successful stream (QEMU's autostart). When off,
    /// the devices stay stopped after the load until the VMM starts the guest through the
    /// destination's ``MigrationDestination/runState`` (``VMRunState/start(_:)``).
    public var resumeOnCompletion = true

    /// Source: let a migration with more than one VFIO device proceed although some of them
    /// lack P2P (RUNNING_P2P). Without P2P a device cannot be quiesced before the others stop,
    /// so it may still send peer-to-peer DMA to a device whose state is being captured; QEMU
    /// blocks such a migration the same way unless told otherwise. Read by device handlers
    /// in `savePrepare` (``SaveContext/parameters``).
    public var allowDevicesWithoutP2P = false

    // MARK: Multifd (docs/multifd.md)

    /// Extra channels beside the main one for device state (QEMU `multifd-channels`, but
    /// Switchover's default is 0: none). Both ends must agree: the destination waits for this
    /// many channel connections besides the main one. 0 to 255.
    public var multifdChannels = 0

    /// Per-device `x-migration-multifd-transfer`, keyed by (idstr, instance id); devices not
    /// listed use ``multifdTransferDefault``. Both ends must resolve each device alike.
    public var multifdTransfer: [HandlerIdentity.Key: MultifdTransferSetting] = [:]

    /// The setting of devices not in ``multifdTransfer`` (QEMU: AUTO).
    public var multifdTransferDefault: MultifdTransferSetting = .auto

    /// Destination: the most device-state buffers one device may have received and not yet
    /// loaded. Beyond it a receive thread waits while the device's next buffer is queued (its
    /// load thread drains them), else the migration fails with
    /// ``MultifdError/queueLimitExceeded(channel:device:limit:)`` (a flood, a lost packet).
    /// Memory is bounded by this × ``multifdMaxPacketSize`` per device.
    public var multifdMaxQueuedBuffers = 256

    /// Destination: the largest device-state packet accepted (`next_packet_size`), checked
    /// before anything is allocated.
    public var multifdMaxPacketSize = MultiFDFormat.defaultMaxPacketSize

    /// Destination: the bytes of multifd device state that all devices together may hold
    /// received and not yet loaded, counting packets being read and buffers being loaded: what
    /// a source can make this destination hold on the channels. A packet is admitted before its
    /// data is read; over the budget its channel waits while buffers are loading, and fails the
    /// migration with ``MultifdError/budgetExceeded(channel:device:packetSize:queued:budget:)``
    /// when nothing is (before SWITCHOVER_START, or a missing packet). At least
    /// ``multifdMaxPacketSize``. CLI: `incoming --multifd-queue-budget`.
    public var multifdQueueBudget = 256 << 20

    /// Destination: after the main stream's EOF, how long the remaining multifd data may take
    /// to arrive and load in all (besides: no progress for ``stallTimeout`` fails it sooner).
    /// nil waits as long as progress continues.
    public var multifdDrainTimeout: Duration? = .seconds(300)

    /// Destination: the fewest bytes per second a source must deliver (main stream and
    /// multifd channels together) while the destination waits for them, judged over each
    /// ``stallTimeout`` of waiting: a peer that trickles bytes to keep a connection alive is cut
    /// off with a ``MigrationError/Code/peerTooSlow`` error. nil turns the check off.
    public var minimumReceiveRate: UInt64? = 1024

    /// Source: packets queued per channel before a device's save thread waits (backpressure:
    /// memory is bounded by channels × depth × packet size, never by the state size).
    public var multifdSendQueueDepth = 2

    /// Beyond QEMU 10.0 (Switchover peers only, both ends must agree): devices with multifd
    /// transfer also send their pre-copy data as packets over the channels, on a thread per
    /// device with a fair share of the bandwidth cap per 100 ms window; the PART sections then
    /// carry nothing for them. Handlers opt in with ``MultifdSupport/precopy``.
    public var multifdPrecopy = false

    public init() {}

    /// Length of a rate-limit window (QEMU `BUFFER_DELAY`).
    public static let rateLimitWindow: Duration = .milliseconds(100)
}
