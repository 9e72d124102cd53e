import Foundation
import MigrationCore
import MigrationStream
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// What an ``ExampleMachine`` hosts: guest RAM with a dirtying workload and simulated
/// passthrough devices. Source and destination are built from the same configuration.
public struct ExampleMachineConfiguration: Sendable, Hashable {
    /// Guest RAM ("pc.ram" plus a 256 KiB "pc.bios").
    public var memoryBytes: Int
    /// Pages the guest workload dirties per second while the source runs.
    public var dirtyPagesPerSecond: Int
    /// The devices, in registration order.
    public var devices: [DeviceSpec]
    /// Written after the stream header; both ends must agree.
    public var machineType: String

    public init(
        memoryBytes: Int = 64 << 20, dirtyPagesPerSecond: Int = 2_000, devices: [DeviceSpec] = [],
        machineType: String = "pc-q35-7.2"
    ) {
        self.memoryBytes = memoryBytes
        self.dirtyPagesPerSecond = dirtyPagesPerSecond
        self.devices = devices
        self.machineType = machineType
    }

    /// The devices' PCI addresses: each spec's `name`, or ``DeviceSpec/defaultName(index:)``.
    /// Throws when two devices would share an address or a default cannot be assigned.
    public func deviceNames() throws(DeviceSpecError) -> [String] {
        var names: [String] = []
        for (index, spec) in devices.enumerated() {
            guard let name = spec.name ?? (index < 31 ? DeviceSpec.defaultName(index: index) : nil) else {
                throw DeviceSpecError(spec: spec.description, problem: "more than 31 devices: give this one a name=")
            }
            guard !names.contains(name) else {
                throw DeviceSpecError(spec: spec.description, problem: "address \(name) is already taken by another device")
            }
            names.append(name)
        }
        return names
    }
}

/// A simulated device of an ``ExampleMachine`` with its handler.
public struct ExampleDevice: Sendable {
    public let spec: DeviceSpec
    /// The PCI address; the handler is registered as "<name>/vfio", instance 0, version 1.
    public let name: String
    public let device: SimulatedVFIODevice
    public let handler: VFIOPCIHandler
}

/// One side of an example migration: an ``ExampleVM`` (RAM with a workload) plus simulated
/// VFIO devices, their handlers registered in the order a destination must mirror (RAM
/// first, then the devices), and the ``runState`` the engine stops and starts the guest
/// through: the vCPUs (the workload) and, behind the P2P barrier, every device.
///
/// Both sides are built from the same ``ExampleMachineConfiguration``; the destination's RAM
/// and device content start from other seeds, so a migration that arrives byte-identical
/// proves the bytes moved. Compare with ``digests``.
public final class ExampleMachine: VMController, Sendable {
    public enum Role: String, Sendable { case source, destination }

    public let role: Role
    public let configuration: ExampleMachineConfiguration
    public let vm: ExampleVM
    public let devices: [ExampleDevice]
    public let registry = HandlerRegistry()
    /// Destination: whether starting the guest starts its workload (off by default, so the
    /// memory can still be compared with the source's after the migration).
    public let workloadAfterResume: Bool
    /// The guest's vCPUs (the workload on a source).
    public let vcpus: ExampleVCPUs
    /// The run state the engines and the VMM change: give it to `MigrationSource(runState:…)`
    /// and `MigrationDestination(runState:…)`.
    public let runState: VMRunState
    /// Source: the devices that write guest RAM by DMA (specs with `dma=`) and the RAM they may
    /// write, for `MigrationSource(…, dirtyTracking:)`; `.none` on a destination or without them.
    public var dirtyTracking: DirtyTrackingConfiguration { dma.tracking }
    private let dma: ExampleMachineDMA

    /// The machine configuration written after the stream header.
    public var machine: MachineConfiguration { MachineConfiguration(machineType: configuration.machineType) }

    /// Seeds of the guest content: the destination's differ from the source's.
    static func ramSeed(_ role: Role) -> UInt64 { role == .source ? 0x5EED : 0xD1FF_5EED }
    static func deviceSeed(_ spec: DeviceSpec, index: Int, role: Role) -> UInt64 {
        let base = spec.seed ?? (0x1000 + UInt64(index))
        return role == .source ? base : base ^ 0xDE57_0000_0000_0000
    }

    /// Builds the VM, opens its devices (in RUNNING) and registers the handlers.
    /// - Throws: ``DeviceSpecError`` for clashing addresses, ``ExampleVMError``, `VFIOError`,
    ///   `RegistryError`.
    public init(_ configuration: ExampleMachineConfiguration, role: Role, workloadAfterResume: Bool = false) throws {
        (self.role, self.configuration, self.workloadAfterResume) = (role, configuration, workloadAfterResume)
        let names = try configuration.deviceNames()
        vm = try ExampleVM(
            memoryBytes: configuration.memoryBytes,
            dirtyPagesPerSecond: configuration.dirtyPagesPerSecond, seed: Self.ramSeed(role))
        var devices: [ExampleDevice] = []
        for (index, spec) in configuration.devices.enumerated() {
            let simulated = try SimulatedVFIODevice(
                spec.simulatedConfiguration(name: names[index], seed: Self.deviceSeed(spec, index: index, role: role)))
            devices.append(ExampleDevice(spec: spec, name: names[index], device: simulated, handler: spec.makeHandler(device: simulated)))
        }
        self.devices = devices
        dma = try ExampleMachineDMA(devices: devices, vm: vm, role: role)
        vcpus = ExampleVCPUs(vm: vm, drivesWorkload: role == .source || workloadAfterResume)
        runState = VMRunState(registry: registry, vcpus: vcpus)
        let ram = RAMHandler.identity
        try registry.register(vm.ramHandler, idstr: ram.idstr, instanceID: ram.instanceID, versionID: ram.versionID)
        for device in devices {
            try registry.register(
                device.handler, idstr: VFIOPCIHandler.idstr(for: device.name), instanceID: 0,
                versionID: VFIOPCIHandler.sectionVersion)
        }
    }

    /// Starts the guest through the run state (a source before it migrates; a destination
    /// whose migration left it stopped): every device, then the vCPUs.
    public func start() throws {
        try runState.start(.vmm)
    }

    /// Stops the guest workload and closes the devices. Call once the migration is over.
    public func shutdown() {
        vm.stop()
        for device in devices { try? device.device.close() }
        dma.close()
    }

    // MARK: VMController (the vCPUs)

    public var isRunning: Bool { vcpus.isRunning }
    public func stopVM() throws { try vcpus.stopVM() }
    public func resumeVM() throws { try vcpus.resumeVM() }

    // MARK: Run-state history

    /// Every vCPU stop and start and every device transition so far, in the order they
    /// happened.
    public var lifecycle: [LifecycleEvent] {
        let transitions = devices.flatMap { device in
            device.device.recordedTransitions.map {
                LifecycleEvent(sequence: $0.sequence, subject: device.name, change: "\($0.from)→\($0.to)" + ($0.isReset ? " (reset)" : ""))
            }
        }
        return (vcpus.recorded + transitions).sorted { $0.sequence < $1.sequence }
    }

    /// The switchover as this side saw it: on a source, from the last vCPU stop to the last
    /// device entering STOP_COPY; on a destination, from the last device leaving RESUMING to
    /// the vCPU start.
    public var switchoverLifecycle: [LifecycleEvent] {
        let all = lifecycle
        switch role {
        case .source:
            guard let stop = all.lastIndex(where: { $0.subject == "vCPUs" && $0.change == "stop" }) else { return [] }
            let rest = all[stop...]
            let end = rest.lastIndex { $0.change.hasSuffix("→STOP_COPY") } ?? rest.endIndex - 1
            return Array(rest[...end])
        case .destination:
            guard let loaded = all.lastIndex(where: { $0.change.hasPrefix("RESUMING→") }) else { return [] }
            return Array(all[all.index(after: loaded)...])
        }
    }

    // MARK: Comparing the two sides

    /// Digests of what this side holds: RAM, and per device the bytes its save session
    /// produced (source) or its last resume session absorbed (destination).
    public var digests: MachineDigests {
        MachineDigests(
            ram: vm.ram.digest(),
            devices: devices.map {
                DeviceDigest(
                    name: $0.name, kind: $0.spec.kind,
                    stream: role == .source ? $0.device.savedStreamDigest : $0.device.loadedStreamDigest)
            })
    }
}

/// One device's stream digest (nil when no session ran).
public struct DeviceDigest: Sendable, Hashable {
    public var name: String
    public var kind: DeviceSpec.Kind
    public var stream: VFIOStateDigest?
}

/// What ``ExampleMachine/digests`` reports.
public struct MachineDigests: Sendable, Hashable {
    /// The 64-bit digest of all guest RAM.
    public var ram: UInt64
    public var devices: [DeviceDigest]

    /// Compares a source's digests with a destination's.
    public func verify(destination: MachineDigests) -> MigrationVerification {
        var checks = [
            MigrationVerification.Check(
                name: "ram", source: Self.hex(ram), destination: Self.hex(destination.ram),
                matches: ram == destination.ram)
        ]
        for (index, device) in devices.enumerated() {
            let other = index < destination.devices.count ? destination.devices[index] : nil
            let matches = device.stream != nil && device.stream == other?.stream && device.name == other?.name
            checks.append(
                MigrationVerification.Check(
                    name: device.name, source: device.stream?.description ?? "none",
                    destination: other?.stream?.description ?? "none", matches: matches))
        }
        if destination.devices.count > devices.count {
            checks.append(
                MigrationVerification.Check(
                    name: "devices", source: "\(devices.count)",
                    destination: "\(destination.devices.count)", matches: false))
        }
        return MigrationVerification(checks: checks)
    }

    /// A digest as 16 hexadecimal digits.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// Whether every piece of state arrived byte-identical.
public struct MigrationVerification: Sendable, Hashable {
    public struct Check: Sendable, Hashable {
        /// "ram" or a device's address.
        public var name: String
        public var source: String
        public var destination: String
        public var matches: Bool
    }

    public var checks: [Check]
    /// True when RAM and every device match.
    public var verified: Bool { checks.allSatisfy(\.matches) }
}

extension ExampleMachineConfiguration {
    /// What `switchover demo` migrates, and the benchmarks' load-cost sweep: 16 MiB of RAM
    /// dirtied at 8 MiB/s; an mlx5 VF whose 16 MiB of initial data take the destination
    /// `initialLoad` to load (firmware resource allocation), whose 2 MiB final image takes it
    /// `finalLoad`, and which writes 1 MiB/s of guest RAM by DMA (tracked by its DMA log); a
    /// generic VFIO device of 2 MiB whose final data also takes `finalLoad`.
    ///
    /// The device's initial data is about as large as what the RAM sends, so the source is
    /// ready to switch over soon after it: without switchover-ack the destination may still be
    /// loading then, and that load lands inside the downtime. The final loads happen while the
    /// guest is stopped: one device after the other on the main stream, in parallel with multifd.
    public static func demo(initialLoad: Duration = .milliseconds(200), finalLoad: Duration = .milliseconds(40)) -> Self {
        ExampleMachineConfiguration(
            memoryBytes: 16 << 20, dirtyPagesPerSecond: (8 << 20) / GuestRAM.pageSize,
            devices: [
                DeviceSpec(
                    kind: .mlx5, stateBytes: 18 << 20, initialBytes: 16 << 20, loadCost: initialLoad, finalLoadCost: finalLoad,
                    dmaBytesPerSecond: 1 << 20),
                DeviceSpec(kind: .vfioPCI, stateBytes: 2 << 20, initialBytes: 1 << 20, finalLoadCost: finalLoad)
            ])
    }
}
