import ArgumentParser
import ExampleVM
import MigrationCore
import MigrationStream

/// A value on the command line with the text it was given (shown as the default in `--help`),
/// parsed by `Unit`: ``ByteSize``, ``ByteRate``, ``DurationArgument``.
struct ParsedArgument<Unit: ArgumentUnit>: ExpressibleByArgument, Sendable {
    var value: Unit.Value
    var text: String

    init(_ text: String, _ value: Unit.Value) { (self.text, self.value) = (text, value) }

    init?(argument: String) {
        guard let value = Unit.parse(argument) else { return nil }
        self.init(argument, value)
    }

    var defaultValueDescription: String { text }
}

/// How a ``ParsedArgument`` reads its text.
protocol ArgumentUnit {
    associatedtype Value: Sendable
    static func parse(_ text: String) -> Value?
}

/// A byte count on the command line: `64MiB`, `4096`, `1GiB`.
typealias ByteSize = ParsedArgument<Bytes>
enum Bytes: ArgumentUnit {
    static func parse(_ text: String) -> UInt64? { Units.parseBytes(text) }
}
extension ParsedArgument where Unit == Bytes {
    init(_ text: String, bytes: UInt64) { self.init(text, bytes) }
    var bytes: UInt64 { value }
}

/// A rate in bytes per second: `8MiB`, `8MiB/s`, `1GB/s`.
typealias ByteRate = ParsedArgument<BytesPerSecond>
enum BytesPerSecond: ArgumentUnit {
    static func parse(_ text: String) -> UInt64? { Units.parseBytes(text.hasSuffix("/s") ? String(text.dropLast(2)) : text) }
}
extension ParsedArgument where Unit == BytesPerSecond {
    init(_ text: String, bytesPerSecond: UInt64) { self.init(text, bytesPerSecond) }
    var bytesPerSecond: UInt64 { value }
}

/// A duration on the command line: `300ms`, `1.5s`, `2min`.
typealias DurationArgument = ParsedArgument<Seconds>
enum Seconds: ArgumentUnit {
    static func parse(_ text: String) -> Duration? { Units.parseDuration(text) }
}
extension ParsedArgument where Unit == Seconds {
    var duration: Duration { value }
}

/// The example VM each end hosts: guest RAM with a dirtying workload and simulated devices.
/// Source and destination must be given the same options.
struct MachineOptions: ParsableArguments {
    @Option(
        name: .customLong("device"),
        help: ArgumentHelp(
            "A simulated device: KIND[:key=value,...], KIND mlx5, vfio-pci or mtty. Repeat for more.",
            discussion: """
                Keys: state=SIZE (total state), initial=SIZE (pre-copy initial bytes, default state/4), \
                load=DURATION (destination load cost of the initial data), final-load=DURATION (of each \
                later image), dirty=RATE (mlx5: bytes/s dirtied while running), dma=RATE (bytes/s of guest \
                RAM the device writes by DMA while the guest runs), dma-tracking=log|iommu|none (what can \
                track those writes; default log for mlx5 and mtty, iommu for vfio-pci), ports=N (mtty), \
                name=DDDD:BB:DD.F (default 0000:00:0N.0), seed=N. Example: \
                mlx5:state=256MiB,initial=64MiB,load=300ms
                """,
            valueName: "spec"))
    var deviceSpecs: [String] = []

    @Option(help: ArgumentHelp("Guest RAM.", valueName: "size"))
    var memory = ByteSize("64MiB", bytes: 64 << 20)

    @Option(
        help: ArgumentHelp(
            "Guest memory the source's workload dirties per second while it runs.", valueName: "rate"))
    var dirtyRate = ByteRate("8MiB/s", bytesPerSecond: 8 << 20)

    @Option(
        help: ArgumentHelp("The machine type written in the stream; both ends must agree.", valueName: "type"))
    var machineType = "pc-q35-7.2"

    /// The parsed `--device` specs (valid after `validate()`).
    var devices: [DeviceSpec] {
        deviceSpecs.compactMap { try? DeviceSpec(parsing: $0) }
    }

    func validate() throws {
        for text in deviceSpecs {
            do { _ = try DeviceSpec(parsing: text) } catch { throw ValidationError("--device \(error.spec): \(error.problem)") }
        }
        do { _ = try machineConfiguration.deviceNames() } catch { throw ValidationError("--device \(error.spec): \(error.problem)") }
        guard memory.bytes >= 1 << 20, memory.bytes <= 64 << 30 else {
            throw ValidationError("--memory \(memory.text): the example VM has 1 MiB to 64 GiB of RAM")
        }
    }

    var machineConfiguration: ExampleMachineConfiguration {
        ExampleMachineConfiguration(
            memoryBytes: Int(memory.bytes),
            dirtyPagesPerSecond: Int(clamping: dirtyRate.bytesPerSecond / UInt64(GuestRAM.pageSize)),
            devices: devices, machineType: machineType)
    }
}

/// The migration's parameters (``MigrationParameters``). Switchover-ack and multifd must be
/// the same on both ends: nothing on the wire checks them.
struct MigrationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The longest the guest may stay stopped.", valueName: "duration"))
    var downtimeLimit = DurationArgument("300ms", .milliseconds(300))

    @Option(
        help: ArgumentHelp(
            "Cap on the live phase's bandwidth, e.g. 1GiB/s (default: no cap; the switchover is never capped).", valueName: "rate"))
    var maxBandwidth: ByteRate?

    @Option(
        help: ArgumentHelp(
            "Bandwidth to assume for the switchover decision instead of the measured one, e.g. 10GB/s (QEMU avail-switchover-bandwidth).",
            valueName: "rate"))
    var switchoverBandwidth: ByteRate?

    @Flag(
        help: ArgumentHelp(
            "Wait for the destination to acknowledge each device's initial data before stopping the guest."))
    var switchoverAck = false

    @Option(
        help: ArgumentHelp(
            "Extra connections carrying the devices' stop-copy state in parallel (0 = off; 0 to 255). Not with file: or fd:.",
            valueName: "n"))
    var multifdChannels = 0

    @Flag(
        help: ArgumentHelp(
            "Decide the switchover as QEMU does (pending bytes / bandwidth), not counting the destination's reported load time."))
    var qemuDecision = false

    @Flag(
        help: ArgumentHelp(
            "Do not use Switchover's wire extensions (pre-flight, load reports and backlogs, per-device acks): needed to migrate to QEMU."))
    var noExtensions = false

    @Option(help: ArgumentHelp("Fail when no progress is made for this long.", valueName: "duration"))
    var stallTimeout = DurationArgument("30s", .seconds(30))

    @Option(
        help: ArgumentHelp(
            "Fail when the acknowledgement does not come for this long once the rest is ready.", valueName: "duration"))
    var switchoverTimeout = DurationArgument("60s", .seconds(60))

    @Option(
        help: ArgumentHelp(
            "Report the migration as not converging when the pending data has not reached a new low (1 % under the lowest) for this long.",
            valueName: "duration"))
    var convergenceWindow = DurationArgument("10s", .seconds(10))

    @Flag(
        help: ArgumentHelp(
            "Fail (status 1, the guest keeps running) once the migration is not converging, instead of iterating until --timeout or Ctrl-C."
        ))
    var abortIfNotConverging = false

    @Flag(
        help: ArgumentHelp(
            "When a device's DMA writes can be tracked neither by its DMA log nor by its IOMMU, count all DMA-mapped guest memory as dirty at every pass (QEMU's fallback) instead of refusing the migration."
        ))
    var allowUntrackedDMA = false

    func validate() throws {
        guard downtimeLimit.duration > .zero else { throw ValidationError("--downtime-limit must be more than 0") }
        if let maxBandwidth, maxBandwidth.bytesPerSecond < 10 {
            throw ValidationError("--max-bandwidth \(maxBandwidth.text): at least 10 bytes/s (the cap is enforced per 100 ms)")
        }
        if let switchoverBandwidth, switchoverBandwidth.bytesPerSecond == 0 {
            throw ValidationError("--switchover-bandwidth must be more than 0")
        }
        guard (0...255).contains(multifdChannels) else { throw ValidationError("--multifd-channels must be 0 to 255") }
        guard stallTimeout.duration > .zero, switchoverTimeout.duration > .zero else {
            throw ValidationError("--stall-timeout and --switchover-timeout must be more than 0")
        }
        guard convergenceWindow.duration > .zero else { throw ValidationError("--convergence-window must be more than 0") }
    }

    var parameters: MigrationParameters {
        var p = MigrationParameters()
        apply(to: &p)
        return p
    }

    func apply(to p: inout MigrationParameters) {
        p.downtimeLimit = downtimeLimit.duration
        p.maxBandwidth = maxBandwidth?.bytesPerSecond
        p.switchoverBandwidth = switchoverBandwidth?.bytesPerSecond
        p.switchoverAck = switchoverAck
        p.countDestinationLoadTime = !qemuDecision
        p.extensions = !noExtensions
        p.stallTimeout = stallTimeout.duration
        p.switchoverTimeout = switchoverTimeout.duration
        p.multifdChannels = multifdChannels
        p.convergenceWindow = convergenceWindow.duration
        p.abortWhenNotConverging = abortIfNotConverging
        p.allowUntrackedDMA = allowUntrackedDMA
    }
}

/// What a source may make this destination hold and how slowly it may send: the limits of
/// docs/security.md (``MigrationParameters/multifdQueueBudget`` and its neighbours).
struct DestinationLimitOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The multifd device state all devices together may hold received and not yet loaded; at least 64MiB (the largest packet).",
            valueName: "size"))
    var multifdQueueBudget = ByteSize("256MiB", bytes: 256 << 20)

    @Option(
        help: ArgumentHelp(
            "After the main stream's EOF, how long the remaining multifd data may take to arrive and load.", valueName: "duration"))
    var multifdDrainTimeout = DurationArgument("300s", .seconds(300))

    @Option(
        name: .customLong("min-receive-rate"),
        help: ArgumentHelp(
            "Cut off a source that delivers less than this while we wait for it (judged over each --stall-timeout); 0 turns the check off.",
            valueName: "rate"))
    var minimumReceiveRate = ByteRate("1KiB/s", bytesPerSecond: 1024)

    func validate() throws {
        guard multifdQueueBudget.bytes >= UInt64(MultiFDFormat.defaultMaxPacketSize), multifdQueueBudget.bytes <= UInt64(Int.max) else {
            throw ValidationError("--multifd-queue-budget \(multifdQueueBudget.text): at least 64MiB, the largest multifd packet accepted")
        }
        guard multifdDrainTimeout.duration > .zero else { throw ValidationError("--multifd-drain-timeout must be more than 0") }
    }

    func apply(to p: inout MigrationParameters) {
        p.multifdQueueBudget = Int(multifdQueueBudget.bytes)
        p.multifdDrainTimeout = multifdDrainTimeout.duration
        p.minimumReceiveRate = minimumReceiveRate.bytesPerSecond == 0 ? nil : minimumReceiveRate.bytesPerSecond
    }
}

/// How `migrate` and `incoming` report: the final statistics as JSON, the progress line.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print the final statistics as one JSON object.")
    var json = false

    @Flag(help: "Do not show the progress line.")
    var noProgress = false

    /// The migration address given to `option`, or a usage error naming the option.
    static func address(_ text: String, option: String) throws -> MigrationAddress {
        do { return try MigrationAddress(parsing: text) } catch { throw ValidationError("\(option) \(error)") }
    }
}
