import MLX5Handler
import MigrationTestKit
import Testing
import VFIO
import VFIOPCIHandler

/// The generic module passes the conformance kit with a hisi/qat-style fixed-blob device.
/// The kit's own limits are generous (no run meets one under load); the suites' time limit
/// only ends a hung run.
@Suite(.timeLimit(.minutes(10))) struct GenericModuleConformance {
    let kit = VendorConformance(
        module: VFIOPCIHandler.module,
        device: .opaque(name: "0000:5e:00.1", size: 3 << 20, initialBytes: 256 << 10, seed: 11))

    @Test(arguments: VendorConformance.Scenario.allCases)
    func migratesByteIdentically(_ scenario: VendorConformance.Scenario) async throws {
        try await kit.checkMigration(scenario)
    }

    @Test func connectionLossAtEveryRecordLeavesTheSourceRunning() async throws {
        try await kit.checkConnectionLoss()
    }

    @Test func cancelInEveryPhaseLeavesTheSourceRunning() async throws {
        try await kit.checkCancel()
    }

    @Test func malformedBodiesAreRefused() throws {
        try kit.checkMalformedBodies()
    }

    @Test(arguments: [1, 4], [false, true])
    func devicesFollowTheRunStateBehindTheP2PBarrier(devices: Int, multifd: Bool) async throws {
        try await kit.checkRunStateOrder(devices: devices, multifd: multifd)
    }
}

/// The generic module with devices that lack P2P: refused together unless allowed.
@Suite(.timeLimit(.minutes(10))) struct GenericModuleWithoutP2PConformance {
    let kit = VendorConformance(
        module: VFIOPCIHandler.module,
        device: .opaque(name: "0000:5e:00.1", migration: [.stopCopy, .preCopy], size: 1 << 20, initialBytes: 64 << 10, seed: 12))

    @Test func devicesWithoutP2PAreRefusedTogetherUnlessAllowed() async throws {
        try await kit.checkRunStateOrder(devices: 2)
    }
}

/// A device without PRE_COPY: the kit runs what it can, and the two PRE_COPY scenarios are
/// reported as skipped through Swift Testing (the kit's trait), not as passes.
@Suite(.timeLimit(.minutes(10))) struct GenericModuleStopCopyOnlyConformance {
    static let kit = VendorConformance(
        module: VFIOPCIHandler.module,
        device: .opaque(name: "0000:5e:00.2", migration: [.stopCopy, .p2p], size: 1 << 20, initialBytes: 64 << 10, seed: 13))

    @Test func onlyTheStopCopyScenarioCanRun() {
        #expect(Self.kit.runnableScenarios == [.stopCopyOnly])
    }

    @Test(Self.kit.enabled(for: .preCopyWithAck)) func migratesWithPreCopyAndAck() async throws {
        try await Self.kit.checkMigration(.preCopyWithAck)
    }

    @Test(Self.kit.enabled(for: .preCopyWithoutAck)) func migratesWithPreCopy() async throws {
        try await Self.kit.checkMigration(.preCopyWithoutAck)
    }

    @Test(Self.kit.enabled(for: .stopCopyOnly)) func migratesInStopCopyOnly() async throws {
        try await Self.kit.checkMigration(.stopCopyOnly)
    }

    @Test(Self.kit.enabled(for: .stopCopyOnly)) func cancelInEveryPhaseLeavesTheSourceRunning() async throws {
        try await Self.kit.checkCancel(.stopCopyOnly)
    }
}

/// The mlx5 module passes the conformance kit with a simulated ConnectX VF.
@Suite(.timeLimit(.minutes(10))) struct MLX5ModuleConformance {
    let kit = VendorConformance(
        module: MLX5Module.module,
        device: .mlx5(name: "0000:3b:00.2", imageSize: 2 << 20, finalImageSize: 512 << 10, seed: 21))

    @Test(arguments: VendorConformance.Scenario.allCases)
    func migratesByteIdentically(_ scenario: VendorConformance.Scenario) async throws {
        try await kit.checkMigration(scenario)
    }

    @Test func connectionLossAtEveryRecordLeavesTheSourceRunning() async throws {
        try await kit.checkConnectionLoss()
    }

    @Test func cancelInEveryPhaseLeavesTheSourceRunning() async throws {
        try await kit.checkCancel()
    }

    @Test func malformedBodiesAreRefused() throws {
        try kit.checkMalformedBodies()
    }

    @Test(arguments: [1, 4], [false, true])
    func devicesFollowTheRunStateBehindTheP2PBarrier(devices: Int, multifd: Bool) async throws {
        try await kit.checkRunStateOrder(devices: devices, multifd: multifd)
    }
}
