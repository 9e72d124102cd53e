// The migrations the benchmarks (`make bench`) and the figures (`make plots`) measure: both
// ends of an example VM in one process over TCP loopback (ExampleVM's LoopbackMigration),
// simulated mlx5 devices whose initial data costs the destination time to load.
import ExampleVM
import Foundation
import MigrationCore

public enum MigrationScenarios {
    // MARK: The sweeps

    /// Destination load costs of the mlx5 device's initial data, in milliseconds.
    public static let loadCosts = [0, 100, 200, 400]
    /// Devices in the device-count sweep.
    public static let deviceCounts = [1, 2, 4]
    /// Channel counts of the channel sweep (4 devices).
    public static let channelCounts = [0, 1, 2, 4, 8]
    /// Channels of the multifd line of the device-count sweep.
    public static let deviceCountChannels = 4
    /// Device state migrated while the peak memory is measured.
    public static let stateSizes: [UInt64] = [1 << 30, 4 << 30]

    // MARK: The machines

    /// The demo's VM (``ExampleMachineConfiguration/demo(initialLoad:)``): 16 MiB of RAM, an
    /// mlx5 VF with 16 MiB of initial data loaded in `loadMs` and a 2 MiB final image, a 2 MiB
    /// generic device.
    public static func loadCostMachine(loadMs: Int) -> ExampleMachineConfiguration {
        .demo(initialLoad: .milliseconds(loadMs))
    }

    /// `count` mlx5 VFs of 17 MiB each: 16 MiB of initial data that takes the destination 100 ms
    /// to load, a 1 MiB final image that takes it 20 ms.
    public static func deviceCountMachine(_ count: Int) -> ExampleMachineConfiguration {
        ExampleMachineConfiguration(
            memoryBytes: 16 << 20, dirtyPagesPerSecond: 256,
            devices: (0..<count).map { _ in
                DeviceSpec(
                    kind: .mlx5, stateBytes: 17 << 20, initialBytes: 16 << 20, loadCost: .milliseconds(100),
                    finalLoadCost: .milliseconds(20))
            })
    }

    /// One generic VFIO device (a blob, a quarter of it pre-copy) of `stateBytes` and 1 MiB of RAM.
    public static func memoryMachine(stateBytes: UInt64) -> ExampleMachineConfiguration {
        ExampleMachineConfiguration(
            memoryBytes: 1 << 20, dirtyPagesPerSecond: 0,
            devices: [
                DeviceSpec(kind: .vfioPCI, stateBytes: stateBytes, initialBytes: stateBytes / 4)
            ])
    }

    /// QEMU's defaults (300 ms downtime limit) with switchover-ack on or off and `channels`
    /// multifd channels. `qemuDecision`: the switchover decided as QEMU does (pending /
    /// bandwidth), not also held for the destination's reported backlog and load time
    /// (``MigrationParameters/countDestinationLoadTime``) — the rule the published figures ran under.
    public static func parameters(switchoverAck: Bool, channels: Int = 0, qemuDecision: Bool = false) -> MigrationParameters {
        var p = MigrationParameters()
        p.switchoverAck = switchoverAck
        p.multifdChannels = channels
        p.countDestinationLoadTime = !qemuDecision
        return p
    }

    // MARK: Running them

    /// What one migration measured.
    public struct Sample: Sendable {
        public var downtimeMs: Double
        /// Ours (with the destination's reported load time), at the decision.
        public var predictedMs: Double
        /// QEMU's formula: pending / bandwidth.
        public var predictedQEMUMs: Double
        public var totalMs: Double
        public var bytes: UInt64
        public var verified: Bool
    }

    /// Migrates `machine` once over loopback (every channel in TLS with `secure`).
    public static func run(
        _ machine: ExampleMachineConfiguration, switchoverAck: Bool, channels: Int = 0, qemuDecision: Bool = false,
        secure: LoopbackSecurity? = nil
    ) async throws -> Sample {
        let result = try await LoopbackMigration.run(
            machine, parameters: parameters(switchoverAck: switchoverAck, channels: channels, qemuDecision: qemuDecision),
            timeout: .seconds(60), secure: secure)
        guard result.verification.verified else {
            throw ScenarioError.mismatch(result.verification.checks.filter { !$0.matches }.map(\.name))
        }
        let s = result.statistics
        return Sample(
            downtimeMs: s.downtime.map(Units.milliseconds) ?? 0,
            predictedMs: s.decision?.predictedDowntime.map(Units.milliseconds) ?? 0,
            predictedQEMUMs: s.decision?.predictedDowntimeQEMU.map(Units.milliseconds) ?? 0,
            totalMs: Units.milliseconds(s.totalTime), bytes: s.bytesTransferred, verified: true)
    }

    /// What the peak-memory run measured.
    public struct MemorySample: Sendable {
        public var stateBytes: UInt64
        /// Resident set before the migration (after the peak was reset to it).
        public var baselineBytes: UInt64
        /// The resident set's high-water mark during the migration (VmHWM).
        public var peakBytes: UInt64
        /// Whether the kernel let us reset the high-water mark first (/proc/self/clear_refs).
        public var peakWasReset: Bool
        public var seconds: Double
    }

    /// Migrates `stateBytes` of simulated device state in-process and reads the peak RSS.
    public static func peakMemory(stateBytes: UInt64) async throws -> MemorySample {
        var p = parameters(switchoverAck: false)
        // The stop-copy part is 3/4 of the state: let the guest stop for it.
        p.downtimeLimit = .seconds(600)
        let wasReset = ProcessMemory.resetPeak()
        let baseline = ProcessMemory.residentBytes
        let start = ContinuousClock.now
        let result = try await LoopbackMigration.run(memoryMachine(stateBytes: stateBytes), parameters: p, timeout: .seconds(600))
        let elapsed = ContinuousClock.now - start
        guard result.verification.verified else {
            throw ScenarioError.mismatch(result.verification.checks.filter { !$0.matches }.map(\.name))
        }
        return MemorySample(
            stateBytes: stateBytes, baselineBytes: baseline, peakBytes: ProcessMemory.peakBytes,
            peakWasReset: wasReset, seconds: Units.milliseconds(elapsed) / 1000)
    }

    /// The median of `values` (0 when empty).
    public static func median(_ values: [Double]) -> Double {
        let v = values.sorted()
        guard !v.isEmpty else { return 0 }
        return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
    }
}

public enum ScenarioError: Error, CustomStringConvertible {
    case mismatch([String])

    public var description: String {
        switch self {
        case .mismatch(let names): "state differs after the migration: \(names.joined(separator: ", "))"
        }
    }
}

/// The process's resident memory from /proc/self/status.
public enum ProcessMemory {
    /// VmRSS in bytes (0 when unknown).
    public static var residentBytes: UInt64 { field("VmRSS:") }
    /// VmHWM, the resident set's high-water mark, in bytes (0 when unknown).
    public static var peakBytes: UInt64 { field("VmHWM:") }

    /// Resets VmHWM to the current resident set (Linux ≥ 4.0: "5" to /proc/self/clear_refs).
    @discardableResult
    public static func resetPeak() -> Bool {
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data("5".utf8)) } catch { return false }
        return true
    }

    private static func field(_ name: String) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            // "VmHWM:\t   4336 kB": a tab, padding, the number, the unit.
            let kB = line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { UInt64($0) } ?? 0
            return kB * 1024
        }
        return 0
    }
}
