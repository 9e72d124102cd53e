import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

/// DMA logging (device dirty tracking, features 6–8) as far as the simulator models it: the
/// answers to PROBE, and the kernel's checks before a request reaches the driver (reference §1.2, §1.6).
@Suite("Simulated DMA logging: PROBE answers as the kernel does")
struct SimulatedDMALoggingTests {
    let get = VFIOUAPI.featureGet, set = VFIOUAPI.featureSet, probe = VFIOUAPI.featureProbe
    let start = VFIOFeature.dmaLoggingStart.rawValue, stop = VFIOFeature.dmaLoggingStop.rawValue
    let report = VFIOFeature.dmaLoggingReport.rawValue

    @Test("without log ops every DMA-logging request is ENOTTY, PROBE included, migration or not")
    func withoutLogOps() throws {
        for migration in [VFIOMigrationFlags([.stopCopy, .p2p]), nil] {
            var configuration = SimulatedVFIOConfiguration.opaque()
            configuration.migration = migration
            let device = try SimulatedVFIODevice(configuration, clock: ManualSimulationClock())
            #expect(device.rawFeature(flags: probe | set | start, payload: []).result == .failure(.inappropriateIOCTLForDevice))
            #expect(device.rawFeature(flags: probe | get | report, payload: []).result == .failure(.inappropriateIOCTLForDevice))
            #expect(device.rawFeature(flags: set | stop, payload: []).result == .failure(.inappropriateIOCTLForDevice))
            #expect(try device.client.dmaLoggingSupport() == .unsupported(.inappropriateIOCTLForDevice))
        }
    }

    @Test("with log ops: PROBE of the supported operation is 0, of the other EINVAL; requests are size-checked")
    func withLogOps() throws {
        var configuration = SimulatedVFIOConfiguration.opaque()
        configuration.dmaLogging = true
        let device = try SimulatedVFIODevice(configuration, clock: ManualSimulationClock())
        #expect(device.rawFeature(flags: probe | set | start, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: probe | start, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: probe | get | start, payload: []).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: probe | set | stop, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: probe | get | report, payload: []).result == .success(0))
        #expect(device.rawFeature(flags: probe | set | report, payload: []).result == .failure(.invalidArgument))
        // Without PROBE: exactly one of GET/SET and a whole payload, before the driver is asked.
        #expect(device.rawFeature(flags: start, payload: []).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: set | start, payload: [UInt8](repeating: 0, count: 16)).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: get | report, payload: [UInt8](repeating: 0, count: 24)).result == .failure(.invalidArgument))
        // Then the feature's own checks: START with no range is EINVAL (vfio_main.c); a STOP without a START is accepted.
        #expect(device.rawFeature(flags: set | start, payload: [UInt8](repeating: 0, count: 24)).result == .failure(.invalidArgument))
        #expect(device.rawFeature(flags: set | stop, payload: []).result == .success(0))
        #expect(try device.client.dmaLoggingSupport() == .supported)
    }

    @Test("mtty has log ops (no-op stubs in the kernel sample)")
    func mtty() throws {
        let device = try SimulatedVFIODevice(.mtty(), clock: ManualSimulationClock())
        #expect(try device.client.dmaLoggingSupport() == .supported)
    }
}
