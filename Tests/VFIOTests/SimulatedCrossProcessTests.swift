import Foundation
import Testing

@testable import VFIO
@testable import VFIOSimulator

@Suite("Simulated devices across processes and threads")
struct SimulatedCrossProcessTests {
    @Test("A destination in another process, sharing only the stream, loads the source's mtty state byte-identically")
    func destinationInAnotherProcess() async throws {
        let source = try SimulatedVFIODevice(.mtty(ports: 2, seed: 21), clock: ManualSimulationClock())
        let saveFD = try #require(try source.setState(.preCopy))
        var stream = try saveFD.drain().bytes
        try source.setState(.stopCopy)
        stream += try saveFD.drain().bytes
        let path: String = FileManager.default.temporaryDirectory.appendingPathComponent("vfio-stream-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(stream).write(to: URL(fileURLWithPath: path))
        let expected = try #require(source.savedStreamDigest)

        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { [path = path as String] in
            // The child process: its own device, its own seed, only the stream file in common.
            let destination = try SimulatedVFIODevice(.mtty(ports: 2, seed: 99), clock: ManualSimulationClock())
            let resumeFD = try #require(try destination.setState(.resuming))
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            try resumeFD.write(bytes)
            try destination.setState(.stop)
            let digest = try #require(destination.loadedStreamDigest)
            print("loaded \(digest.byteCount) \(digest.hash)")
        }
        let output = String(decoding: try #require(result).standardOutputContent, as: UTF8.self)
        #expect(output.contains("loaded \(expected.byteCount) \(expected.hash)"))
    }

    @Test("Another thread may query the device while a migration thread drives it")
    func concurrentQueries() async throws {
        let device = try SimulatedVFIODevice(.mlx5(imageSize: 1 << 16, finalImageSize: 4096), clock: ManualSimulationClock())
        let states = try await withThrowingTaskGroup(of: [VFIODeviceState].self) { group in
            group.addTask {
                let fd = try #require(try device.setState(.preCopy))
                _ = try fd.drain(chunk: 4096)
                try device.setState(.stopCopy)
                _ = try fd.drain(chunk: 4096)
                try device.setState(.stop)
                return []
            }
            group.addTask {
                var seen: [VFIODeviceState] = []
                for _ in 0..<200 {
                    seen.append(try device.deviceState())
                    _ = try device.stopCopySize()
                }
                return seen
            }
            var all: [VFIODeviceState] = []
            for try await seen in group { all += seen }
            return all
        }
        let possible: Set<VFIODeviceState> = [.running, .preCopy, .preCopyP2P, .stopCopy, .stop]
        #expect(states.allSatisfy { possible.contains($0) })
        #expect(try device.deviceState() == .stop)
    }
}
