import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

/// The behaviour checks kernel-vfio-check runs inside the QEMU guest against two real mtty-2 mdevs
/// (make test-kernel), run here against the simulator: every check must pass on both.
@Suite("Behaviour checks shared with the real-kernel run")
struct BehaviourChecksTests {
    /// Runs the suite and expects every check to pass; returns the report.
    @discardableResult
    static func runAll(
        _ source: any VFIOMigrationDevice, _ destination: any VFIOMigrationDevice,
        options: VFIOBehaviourChecks.Options = VFIOBehaviourChecks.Options()
    ) throws -> VFIOCheckReport {
        let checks = try VFIOBehaviourChecks(source: source, destination: destination, options: options)
        var report = VFIOCheckReport()
        #expect(checks.run(into: &report) == .completed)
        #expect(report.results.map(\.name) == checks.checkNames)
        for result in report.results {
            #expect(result.passed, "\(result.line)")
        }
        return report
    }

    @Test("Two SimulatedVFIODevice(.mtty(ports: 2)) pass every check")
    func simulatedPair() throws {
        let clock = ManualSimulationClock()
        let source = try SimulatedVFIODevice(.mtty(name: "sim-source", ports: 2, seed: 1), clock: clock)
        let destination = try SimulatedVFIODevice(.mtty(name: "sim-destination", ports: 2, seed: 2), clock: clock)
        let report = try Self.runAll(source, destination)
        #expect(report.results.count == 30)
        #expect(report.summary() == "kernel-vfio: 30 passed, 0 failed")
        // The checks leave both devices reset.
        #expect(source.currentState == .running)
        #expect(destination.currentState == .running)
    }

    @Test("KernelVFIODevice opened through the group path of a simulated Debian 6.12 host passes every check")
    func kernelDevicesOnSimulatedHost() throws {
        let host = SimulatedVFIOHost(cdevSupport: false)
        let clock = ManualSimulationClock()
        let sourceAddress = VFIODeviceAddress.mdev("6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0001")
        let destinationAddress = VFIODeviceAddress.mdev("6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0002")
        host.addDevice(sourceAddress, group: 0, configuration: .mtty(ports: 2, seed: 1), clock: clock)
        host.addDevice(destinationAddress, group: 1, configuration: .mtty(ports: 2, seed: 2), clock: clock)
        let source = try KernelVFIODevice.open(sourceAddress, access: .group, paths: host.paths, system: host)
        let destination = try KernelVFIODevice.open(destinationAddress, access: .group, paths: host.paths, system: host)
        #expect(source.openPath == .group(number: 0, noIOMMU: false))
        // As Debian's 6.12 answers for an mdev group: VIABLE before SET_CONTAINER.
        #expect(source.groupStatusBeforeContainer == VFIOUAPI.groupFlagViable)
        try Self.runAll(source, destination)
    }

    @Test("A prepare-source hook runs before anything is saved, and its failures are reported")
    func prepareSourceHook() throws {
        let clock = ManualSimulationClock()
        // Same seed: the devices start identical, as two fresh mtty mdevs do.
        let source = try SimulatedVFIODevice(.mtty(name: "same-a", ports: 2, seed: 5), clock: clock)
        let destination = try SimulatedVFIODevice(.mtty(name: "same-b", ports: 2, seed: 5), clock: clock)
        var report = VFIOCheckReport()
        try VFIOBehaviourChecks(source: source, destination: destination).run(into: &report)
        let failed = report.results.filter { !$0.passed }.map(\.name)
        // Without a change to the source the migration proves nothing, and the checks say so.
        #expect(failed == ["pre-copy-p2p-to-stop-copy", "destination-readback-matches-source"])

        var options = VFIOBehaviourChecks.Options()
        options.prepareSource = { check in check.note("prepared") }
        var second = VFIOCheckReport()
        var lines: [String] = []
        second.output = { lines.append($0) }
        try VFIOBehaviourChecks(source: source, destination: destination, options: options).run(into: &second)
        #expect(lines.contains("  info: prepared"))
        #expect(lines.contains("PASS prepare-source"))
    }

    @Test("A STOP_COPY→PRE_COPY request that never returns stops the run at that check")
    func hangStopsTheRun() throws {
        let clock = ManualSimulationClock()
        var configuration = SimulatedVFIOConfiguration.mtty(name: "pre-fix", ports: 2, seed: 1)
        configuration.preFixKernel = true
        let source = try SimulatedVFIODevice(configuration, clock: clock)
        let destination = try SimulatedVFIODevice(.mtty(name: "fixed", ports: 2, seed: 2), clock: clock)
        var options = VFIOBehaviourChecks.Options()
        // The simulated hang ends in ETIMEDOUT; a real guard sees no answer before its deadline.
        options.guardedRequest = { request in request() == .timedOut ? .hung : .returned(nil) }
        let checks = try VFIOBehaviourChecks(source: source, destination: destination, options: options)
        var report = VFIOCheckReport()
        #expect(checks.run(into: &report) == .stoppedByHang)
        #expect(report.results.last?.name == "stop-copy-refuses-pre-copy")
        #expect(report.results.last?.passed == false)
        #expect(report.failed == 1)
    }

    @Test("The flags-7 reference table parses into the paths VFIOMigrationFSM walks")
    func referenceTableAgreesWithFSM() {
        let flags: VFIOMigrationFlags = [.stopCopy, .p2p, .preCopy]
        for current in VFIOFlags7Reference.columns {
            for requested in VFIOFlags7Reference.columns {
                let outcome = VFIOFlags7Reference.outcome(from: current, to: requested)
                let path = VFIOMigrationFSM.path(from: current, to: requested, flags: flags)
                switch outcome {
                case .noop: #expect(path == [])
                case .einval: #expect(path == nil)
                case .path(let steps, let newFD):
                    #expect(path == steps, "\(current)->\(requested)")
                    let previous = steps.count >= 2 ? steps[steps.count - 2] : current
                    #expect(newFD == VFIOMigrationFSM.arcOpensSession(from: previous, to: requested), "\(current)->\(requested)")
                case nil: Issue.record("\(current)->\(requested) missing from the table")
                }
            }
        }
    }
}
