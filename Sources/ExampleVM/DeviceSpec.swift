import MLX5Handler
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// A simulated passthrough device as written on a command line:
/// `KIND[:key=value,...]`, e.g. `mlx5:state=256MiB,initial=64MiB,load=300ms`.
///
/// | kind | device | handler |
/// | --- | --- | --- |
/// | `mlx5` | an mlx5 VF: the record stream, an initial image in PRE_COPY, incremental images for dirtied state, a final image | `MLX5Module` (MLX5Handler) |
/// | `vfio-pci` | a fixed blob whose first `initial` bytes are readable in PRE_COPY (hisi_acc, qat, pds style) | the generic `VFIOPCIHandler` |
/// | `mtty` | the kernel's mtty sample device (24-byte header in PRE_COPY, 36 bytes per port after) | the generic `VFIOPCIHandler` |
///
/// | key | meaning | kinds | default |
/// | --- | --- | --- | --- |
/// | `state` | total state the device moves without dirtying (initial + final) | mlx5, vfio-pci | 64MiB (mlx5), 16MiB |
/// | `initial` | the part readable before the switchover (PRE_COPY initial bytes) | mlx5, vfio-pci | state / 4 |
/// | `load` | destination load cost of the initial data (mlx5's firmware allocation) | all | 0ms |
/// | `final-load` | destination load cost of each later image / the final data | all | 0ms |
/// | `dirty` | state dirtied per second while the guest runs (`1MiB` or `1MiB/s`) | mlx5 | 0 |
/// | `dma` | guest RAM the device writes by DMA per second while the guest runs (`1MiB` or `1MiB/s`, whole 4 KiB pages) | all | 0 |
/// | `dma-tracking` | what can track those writes: `log` (the device's DMA log), `iommu` (only its container), `none` | all | `log` (mlx5, mtty), `iommu` |
/// | `ports` | serial ports | mtty | 2 |
/// | `name` | the PCI address (idstr `<name>/vfio`) | all | assigned `0000:00:0N.0` |
/// | `seed` | the source content's seed (the destination's differs) | all | from the position |
///
/// Sizes take B, KiB, MiB, GiB (or KB, MB, GB); durations us, ms, s.
public struct DeviceSpec: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case mlx5
        case vfioPCI = "vfio-pci"
        case mtty
    }

    /// What can track the pages a device writes by DMA (`dma-tracking=`).
    public enum DMATracking: String, Sendable, Hashable, CaseIterable {
        /// The device has a DMA log (its driver has log ops: mlx5, pds, mtty); its container
        /// tracks dirty pages too.
        case log
        /// No DMA log (hisi_acc, qat style); its type1 container tracks dirty pages.
        case iommu
        /// Neither: a type1 container without the migration capability (before Linux 5.8).
        case none
    }

    public var kind: Kind
    /// The PCI address; nil = assigned by position (``defaultName(index:)``).
    public var name: String?
    /// Total state bytes (mlx5, vfio-pci); 0 for mtty (its size follows from the ports).
    public var stateBytes: UInt64
    /// Bytes readable in PRE_COPY before the rest (mlx5, vfio-pci).
    public var initialBytes: UInt64
    public var loadCost: Duration
    public var finalLoadCost: Duration
    public var dirtyBytesPerSecond: UInt64
    /// Guest RAM written by DMA per second while the guest runs (`dma=`), in bytes.
    public var dmaBytesPerSecond: UInt64
    /// What can track the device's DMA writes; nil = by kind (``effectiveDMATracking``).
    public var dmaTracking: DMATracking?
    public var ports: Int
    public var seed: UInt64?

    /// The largest mlx5 state: initial and final image each fit the firmware's 32-bit size
    /// field even when dirtied state is added to the final one.
    public static let maxMLX5State: UInt64 = 0xFFFF_F000

    /// The fastest `dma=` rate: 1 GiB/s.
    public static let maxDMARate: UInt64 = 1 << 30

    /// What tracks the device's DMA: ``dmaTracking``, else `log` for mlx5 (with the firmware's
    /// adv_virtualization) and mtty (log ops), `iommu` for the generic device.
    public var effectiveDMATracking: DMATracking { dmaTracking ?? (kind == .vfioPCI ? .iommu : .log) }

    /// Pages of guest RAM the device writes by DMA per second (at least one when `dma` is set).
    public var dmaPagesPerSecond: Int {
        dmaBytesPerSecond == 0 ? 0 : max(1, Int(dmaBytesPerSecond / UInt64(GuestRAM.pageSize)))
    }

    public init(
        kind: Kind, name: String? = nil, stateBytes: UInt64? = nil, initialBytes: UInt64? = nil,
        loadCost: Duration = .zero, finalLoadCost: Duration = .zero, dirtyBytesPerSecond: UInt64 = 0,
        dmaBytesPerSecond: UInt64 = 0, dmaTracking: DMATracking? = nil, ports: Int = 2, seed: UInt64? = nil
    ) {
        self.dmaBytesPerSecond = dmaBytesPerSecond
        self.dmaTracking = dmaTracking
        self.kind = kind
        self.name = name
        let state = kind == .mtty ? 0 : stateBytes ?? (kind == .mlx5 ? 64 << 20 : 16 << 20)
        self.stateBytes = state
        self.initialBytes = kind == .mtty ? 0 : initialBytes ?? state / 4
        self.loadCost = loadCost
        self.finalLoadCost = finalLoadCost
        self.dirtyBytesPerSecond = dirtyBytesPerSecond
        self.ports = ports
        self.seed = seed
    }

    /// Parses `KIND[:key=value,...]`; throws a ``DeviceSpecError`` that names the bad part.
    public init(parsing text: String) throws(DeviceSpecError) {
        let kindText: Substring
        let rest: Substring?
        if let colon = text.firstIndex(of: ":") {
            kindText = text[..<colon]
            rest = text[text.index(after: colon)...]
        } else {
            kindText = Substring(text)
            rest = nil
        }
        guard let kind = Kind(rawValue: String(kindText)) else {
            throw DeviceSpecError(
                spec: text, problem: "unknown kind \"\(kindText)\" (expected \(Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var state: UInt64?
        var initial: UInt64?
        var spec = DeviceSpec(kind: kind)
        var seen: Set<String> = []
        for pair in (rest ?? "").split(separator: ",", omittingEmptySubsequences: false) where rest != nil {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw DeviceSpecError(spec: text, problem: "\"\(pair)\" is not key=value")
            }
            let key = String(pair[..<equals])
            let value = String(pair[pair.index(after: equals)...])
            guard seen.insert(key).inserted else { throw DeviceSpecError(spec: text, problem: "\(key) is given twice") }
            func size() throws(DeviceSpecError) -> UInt64 {
                guard let bytes = Units.parseBytes(value) else {
                    throw DeviceSpecError(spec: text, problem: "\(key)=\(value) is not a size (e.g. 256MiB, 4096, 1GiB)")
                }
                return bytes
            }
            func duration() throws(DeviceSpecError) -> Duration {
                guard let d = Units.parseDuration(value) else {
                    throw DeviceSpecError(spec: text, problem: "\(key)=\(value) is not a duration (e.g. 300ms, 1.5s)")
                }
                return d
            }
            func only(_ kinds: Kind...) throws(DeviceSpecError) {
                guard kinds.contains(kind) else {
                    throw DeviceSpecError(
                        spec: text,
                        problem: "\(key) applies to \(kinds.map(\.rawValue).joined(separator: " and ")) devices, not \(kind.rawValue)")
                }
            }
            switch key {
            case "state":
                try only(.mlx5, .vfioPCI)
                state = try size()
            case "initial":
                try only(.mlx5, .vfioPCI)
                initial = try size()
            case "load":
                spec.loadCost = try duration()
            case "final-load":
                spec.finalLoadCost = try duration()
            case "dirty":
                try only(.mlx5)
                let rate = value.hasSuffix("/s") ? String(value.dropLast(2)) : value
                guard let bytes = Units.parseBytes(rate) else {
                    throw DeviceSpecError(spec: text, problem: "dirty=\(value) is not a rate (e.g. 4MiB or 4MiB/s)")
                }
                spec.dirtyBytesPerSecond = bytes
            case "dma":
                let rate = value.hasSuffix("/s") ? String(value.dropLast(2)) : value
                guard let bytes = Units.parseBytes(rate), bytes <= Self.maxDMARate else {
                    throw DeviceSpecError(
                        spec: text, problem: "dma=\(value) is not a rate up to 1GiB/s (e.g. 1MiB or 1MiB/s)")
                }
                spec.dmaBytesPerSecond = bytes
            case "dma-tracking":
                guard let tracking = DMATracking(rawValue: value) else {
                    throw DeviceSpecError(spec: text, problem: "dma-tracking=\(value): expected log, iommu or none")
                }
                spec.dmaTracking = tracking
            case "ports":
                try only(.mtty)
                guard let ports = Int(value), (1...24).contains(ports) else {
                    throw DeviceSpecError(spec: text, problem: "ports=\(value): mtty has 1 to 24 ports")
                }
                spec.ports = ports
            case "name":
                guard Self.isPCIAddress(value) else {
                    throw DeviceSpecError(spec: text, problem: "name=\(value) is not a PCI address (DDDD:BB:DD.F, e.g. 0000:3b:00.2)")
                }
                spec.name = value
            case "seed":
                guard let seed = UInt64(value) else { throw DeviceSpecError(spec: text, problem: "seed=\(value) is not a number") }
                spec.seed = seed
            default:
                let keys = "state, initial, load, final-load, dirty, dma, dma-tracking, ports, name, seed"
                throw DeviceSpecError(spec: text, problem: "unknown key \"\(key)\" (\(keys))")
            }
        }
        if kind != .mtty {
            let total = state ?? spec.stateBytes
            spec.stateBytes = total
            spec.initialBytes = initial ?? total / 4
            guard total > 0 else { throw DeviceSpecError(spec: text, problem: "state must be more than 0 bytes") }
            guard spec.initialBytes <= total else {
                throw DeviceSpecError(
                    spec: text, problem: "initial (\(Units.bytes(spec.initialBytes))) exceeds state (\(Units.bytes(total)))")
            }
            if kind == .mlx5, total > Self.maxMLX5State {
                throw DeviceSpecError(
                    spec: text, problem: "an mlx5 device's state is at most \(Self.maxMLX5State) bytes (the firmware's 32-bit image size)")
            }
        }
        self = spec
    }

    /// `DDDD:BB:DD.F` in hexadecimal, as sysfs writes PCI addresses.
    public static func isPCIAddress(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2 else { return false }
        let slot = parts[2].split(separator: ".", omittingEmptySubsequences: false)
        guard slot.count == 2, slot[0].count == 2, slot[1].count == 1 else { return false }
        return [parts[0], parts[1], slot[0], slot[1]].allSatisfy { $0.allSatisfy(\.isHexDigit) }
            && (UInt8(slot[0], radix: 16) ?? 0xff) < 32 && (UInt8(slot[1], radix: 16) ?? 0xff) < 8
    }

    /// The address of the device at `index` (0-based) without a `name`: 0000:00:01.0,
    /// 0000:00:02.0, … (slots 1 to 31).
    public static func defaultName(index: Int) -> String {
        let slot = String(index + 1, radix: 16)
        return "0000:00:" + (slot.count < 2 ? "0" : "") + slot + ".0"
    }

    /// The simulator's configuration for this device.
    public func simulatedConfiguration(name: String, seed: UInt64) -> SimulatedVFIOConfiguration {
        let cost = SimulatedVFIOConfiguration.LoadCost(initial: loadCost, final: finalLoadCost)
        var configuration: SimulatedVFIOConfiguration
        switch kind {
        case .mlx5:
            configuration = .mlx5(
                name: name, imageSize: initialBytes, finalImageSize: stateBytes - initialBytes, seed: seed,
                dirtyBytesPerSecond: dirtyBytesPerSecond, loadCost: cost)
        case .vfioPCI:
            configuration = .opaque(name: name, size: stateBytes, initialBytes: initialBytes, seed: seed)
            configuration.loadCost = cost
        case .mtty:
            configuration = .mtty(name: name, ports: ports, seed: seed)
            configuration.loadCost = cost
        }
        // The driver has DMA-logging ops only when the spec says the device logs its DMA.
        configuration.dmaLogging = effectiveDMATracking == .log
        return configuration
    }

    /// The handler a VMM would pick for this device: the mlx5 module for mlx5, the generic
    /// VFIO-PCI handler otherwise. Its tuning reports `finalLoadCost` as the final data's load
    /// cost, and (mlx5) `loadCost` as the initial image's, as a vendor module reports its
    /// hardware's measured figures.
    public func makeHandler(device: VFIOMigrationDevice) -> VFIOPCIHandler {
        kind == .mlx5
            ? MLX5Module.makeHandler(device: device, tuning: MLX5Tuning(finalLoadCost: finalLoadCost, initialLoadCost: loadCost))
            : VFIOPCIHandler(device: device, tuning: GenericVFIOPCITuning(finalLoadCost: finalLoadCost))
    }

    /// The spec as it would be written (every key, so it can be reused).
    public var description: String {
        var keys: [String] = []
        if let name { keys.append("name=\(name)") }
        if kind != .mtty {
            keys.append("state=\(Self.sizeText(stateBytes))")
            keys.append("initial=\(Self.sizeText(initialBytes))")
        } else {
            keys.append("ports=\(ports)")
        }
        if loadCost != .zero { keys.append("load=\(Self.durationText(loadCost))") }
        if finalLoadCost != .zero { keys.append("final-load=\(Self.durationText(finalLoadCost))") }
        if dirtyBytesPerSecond != 0 { keys.append("dirty=\(Self.sizeText(dirtyBytesPerSecond))/s") }
        if dmaBytesPerSecond != 0 { keys.append("dma=\(Self.sizeText(dmaBytesPerSecond))/s") }
        if let dmaTracking { keys.append("dma-tracking=\(dmaTracking.rawValue)") }
        if let seed { keys.append("seed=\(seed)") }
        return kind.rawValue + ":" + keys.joined(separator: ",")
    }

    private static func sizeText(_ bytes: UInt64) -> String {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes != 0 && bytes % (1 << UInt64(shift)) == 0 {
            return "\(bytes >> UInt64(shift))\(unit)"
        }
        return String(bytes)
    }

    private static func durationText(_ duration: Duration) -> String {
        let micros = Int64(Units.milliseconds(duration) * 1000)
        return micros % 1000 == 0 ? "\(micros / 1000)ms" : "\(micros)us"
    }
}

/// A `--device` spec that cannot be used: which spec and why.
public struct DeviceSpecError: Error, Sendable, Hashable, CustomStringConvertible {
    public var spec: String
    public var problem: String

    public init(spec: String, problem: String) { (self.spec, self.problem) = (spec, problem) }

    public var description: String { "device \"\(spec)\": \(problem)" }
}
