import Foundation
import MigrationCore
import MigrationStream
import Testing

@Suite struct MigrationTests {
    @Test func migratesOverASocketpairWithIdenticalState() async throws {
        let s = try Scenario(ram: { RAMHandler(pages: 128) }, device: DeviceHandler.Config())
        s.sourceRAM.startWorkload(pagesPerTick: 2, tick: 0.001)
        let (source, destination) = try await s.migrate()
        s.sourceRAM.stopWorkload()
        let stats = try source.get()
        let incoming = try destination.get()
        s.expectIdenticalState()
        #expect(s.sourceVM.stops == 1 && s.sourceVM.resumes == 0)
        #expect(s.destinationVM.isRunning)
        #expect(s.sourceRAM.lifecycle.saveCleanups == [true])
        #expect(s.destinationRAM.lifecycle.loadCleanups == [true])
        #expect(s.sourceDevice?.device == .stopped)
        #expect(stats.downtimeEnd == .destinationShut && stats.downtime != nil)
        #expect(stats.usedExtensions && incoming.usedExtensions && incoming.returnPathOpened)
        #expect(stats.bytesTransferred == incoming.bytesTransferred)
        #expect(stats.handlers.map(\.identity.idstr) == ["ram", deviceID, "timer"])
        #expect(incoming.configuration.machineType == machine.machineType)
    }

    @Test func withoutExtensionsTheSourceWritesQEMUsSequence() async throws {
        let s = try Scenario(device: DeviceHandler.Config(needsAck: false))
        var parameters = MigrationParameters()
        parameters.extensions = false
        let recorder = Box<RecordingConnection>()
        let (source, destination) = try await s.migrate(parameters) { c in
            let r = RecordingConnection(c)
            recorder.value = r
            return r
        }
        _ = try source.get()
        let incoming = try destination.get()
        #expect(!incoming.usedExtensions)
        let bytes = try #require(recorder.value).bytes
        let records = try recordBoundaries(bytes).map(\.what)
        #expect(Array(records.prefix(6)) == ["header", "configuration", "OPEN_RETURN_PATH", "PING", "start ram", "start \(deviceID)"])
        let tail = Array(records.suffix(6))
        #expect(tail == ["end ram", "end \(deviceID)", "full \(deviceID)", "full timer", "EOF", "VMDESCRIPTION"])
        #expect(!records.contains("SWITCHOVER_HELLO") && !records.contains("SWITCHOVER_START"))
        s.expectIdenticalState()
    }

    @Test func switchoverStartIsSentOnlyWhenAskedFor() async throws {
        let s = try Scenario()
        var parameters = MigrationParameters()
        parameters.sendSwitchoverStart = true
        let recorder = Box<RecordingConnection>()
        let (source, destination) = try await s.migrate(parameters) { c in
            let r = RecordingConnection(c)
            recorder.value = r
            return r
        }
        _ = try source.get()
        _ = try destination.get()
        let records = try recordBoundaries(try #require(recorder.value).bytes).map(\.what)
        let start = try #require(records.firstIndex(of: "SWITCHOVER_START"))
        #expect(records[start + 1] == "end ram")
    }
}

/// A mutable slot a wrapping closure can fill.
final class Box<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T?
    var value: T? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
