import Foundation
import MigrationCore
import MigrationStream
import TestSupport
import Testing

/// Multifd device-state transfer in the engine, with generic test devices.
@Suite struct MultifdTests {
    static func multifdError<T>(_ result: Result<T, any Error>) -> MultifdError? {
        var next: (any Error)? = result.error
        while let e = next {
            if let m = e as? MultifdError { return m }
            next = (e as? MigrationError)?.cause
        }
        return nil
    }

    @Test(arguments: [1, 2, 4, 8])
    func deviceStateIsIdenticalWithAnyNumberOfChannels(channels: Int) async throws {
        for devices in 1...4 {
            let s = try MultifdScenario(devices: devices)
            let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: channels))
            let stats = try source.get()
            let incoming = try destination.get()
            #expect(s.expectIdentical(), "\(channels) channels, \(devices) devices")
            #expect(stats.multifdChannels == channels && incoming.multifdChannels == channels)
            #expect(stats.multifdBytes > UInt64(devices * (40 << 10)))
            try #require(s.sourceDevices.count == s.destinationDevices.count, "zip would drop devices")
            for (src, d) in zip(s.sourceDevices, s.destinationDevices) {
                // Fed strictly in index order, the config buffer last.
                let packets = (src.data.count + src.chunk - 1) / src.chunk + 1
                #expect(d.indices == Array(0..<UInt32(packets)))
            }
            #expect(s.destinationVM.isRunning && s.sourceVM.stops == 1 && s.sourceVM.resumes == 0)
        }
    }

    @Test func theMainChannelCarriesSwitchoverStartAndDummyBodies() async throws {
        let s = try MultifdScenario(devices: 2)
        let recorder = Box<RecordingConnection>()
        let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: 2)) { index, c in
            guard index == 0 else { return c }
            let r = RecordingConnection(c)
            recorder.value = r
            return r
        }
        let stats = try source.get()
        _ = try destination.get()
        let records = try recordBoundaries(try #require(recorder.value).bytes).map(\.what)
        let start = try #require(records.firstIndex(of: "SWITCHOVER_START"))
        let firstEnd = try #require(records.firstIndex { $0.hasPrefix("end ") })
        #expect(start < firstEnd)
        // The END bodies carry no device data: the main stream is far smaller than the state.
        #expect(stats.bytesTransferred < UInt64(32 * 4096 + 8192))
        #expect(s.expectIdentical())
    }

    @Test func withoutChannelsTheDevicesUseTheirSections() async throws {
        let s = try MultifdScenario(devices: 2)
        let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: 0))
        let stats = try source.get()
        _ = try destination.get()
        #expect(s.expectIdentical())
        #expect(stats.multifdChannels == 0 && stats.multifdBytes == 0)
        #expect(s.destinationDevices.allSatisfy { $0.indices.isEmpty })
    }

    @Test func perDeviceOffKeepsThatDeviceOnTheMainChannel() async throws {
        let s = try MultifdScenario(devices: 2)
        var p = MultifdScenario.parameters(channels: 2)
        p.multifdTransfer[HandlerIdentity.Key(MultifdScenario.deviceID(1))] = .off
        let (source, destination) = await s.migrate(p)
        _ = try source.get()
        _ = try destination.get()
        #expect(s.expectIdentical())
        #expect(!s.destinationDevices[0].indices.isEmpty)
        #expect(s.destinationDevices[1].indices.isEmpty)
    }

    @Test func packetsArrivingOutOfOrderAreLoadedInOrder() async throws {
        let s = try MultifdScenario(devices: 1)
        let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: 1)) { index, c in
            index == 1
                ? PacketFilterConnection(c, [.delay(0, after: 4), .delay(2, after: 3), .delay(5, after: 9)]) as any MigrationConnection : c
        }
        _ = try source.get()
        _ = try destination.get()
        #expect(s.expectIdentical())
        #expect(s.destinationDevices[0].indices == Array(0...10))
    }

    @Test func aMissingPacketFailsBothSides() async throws {
        let s = try MultifdScenario(devices: 1)
        let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: 1)) { index, c in
            index == 1 ? PacketFilterConnection(c, [.drop(3)]) as any MigrationConnection : c
        }
        guard case .missingPacket(let device, let index)? = Self.multifdError(destination) else {
            Issue.record("destination: \(String(describing: destination.error))")
            return
        }
        #expect(device.idstr == MultifdScenario.deviceID(0) && index == 3)
        guard (source.error as? MigrationError)?.code == .destinationFailed else {
            Issue.record("source: \(String(describing: source.error))")
            return
        }
        #expect(s.sourceIntact && s.destinationCleanedUp)
        #expect(s.destinationDevices[0].indices == [0, 1, 2])
    }

    @Test func aDuplicateIndexFailsBothSides() async throws {
        let s = try MultifdScenario(devices: 1)
        let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: 1)) { index, c in
            index == 1 ? PacketFilterConnection(c, [.duplicate(2)]) as any MigrationConnection : c
        }
        guard case .duplicateIndex(let channel, let device, let index)? = Self.multifdError(destination) else {
            Issue.record("destination: \(String(describing: destination.error))")
            return
        }
        #expect(channel == 0 && device.idstr == MultifdScenario.deviceID(0) && index == 2)
        #expect(source.error != nil)
        #expect(s.sourceIntact && s.destinationCleanedUp)
    }

    @Test func aFloodBeyondTheQueueBoundIsRefusedNamingTheDevice() async throws {
        let s = try MultifdScenario(devices: 1)
        var destination = MultifdScenario.parameters(channels: 2)
        destination.multifdMaxQueuedBuffers = 3
        // Packet 0 never comes, so nothing can be loaded and the queue only grows.
        let (source, incoming) = await s.migrate(MultifdScenario.parameters(channels: 2), destination: destination) { index, c in
            index >= 1 ? PacketFilterConnection(c, [.drop(0)]) as any MigrationConnection : c
        }
        guard case .queueLimitExceeded(_, let device, let limit)? = Self.multifdError(incoming) else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(device.idstr == MultifdScenario.deviceID(0) && limit == 3)
        #expect("\(try #require(incoming.error))".contains("multifdMaxQueuedBuffers"))
        #expect(source.error != nil)
        #expect(s.sourceIntact && s.destinationCleanedUp)
    }

    @Test func aFullQueueWhoseNextBufferIsThereWaitsInsteadOfFailing() async throws {
        // One channel keeps packets in order, so the queue always holds the next buffer: the
        // receive thread waits for the load thread (backpressure), it does not fail.
        let s = try MultifdScenario(devices: 2)
        var p = MultifdScenario.parameters(channels: 1)
        p.multifdMaxQueuedBuffers = 1
        let (source, destination) = await s.migrate(p)
        _ = try source.get()
        _ = try destination.get()
        #expect(s.expectIdentical())
    }

    @Test(arguments: [1, 2])
    func aChannelCutMidTransferFailsBothSidesAndTheSourceResumes(channels: Int) async throws {
        let s = try MultifdScenario(devices: 2)
        let cut = channels - 1
        let (source, destination) = await s.migrate(MultifdScenario.parameters(channels: channels)) { index, c in
            // Inside the channel's first packet.
            index == cut + 1 ? FaultInjectingConnection(wrapping: c, fault: .cut(atOffset: 64 + 300)) as any MigrationConnection : c
        }
        let sourceError = try #require(source.error as? MigrationError)
        guard case .channelFailed(let channel, _, let underlying)? = Self.multifdError(source) else {
            Issue.record("source: \(sourceError)")
            return
        }
        #expect(channel == cut)
        #expect(underlying as? TransportError == .injectedCut(offset: 64 + 300))
        let destinationError = try #require(destination.error as? MigrationError)
        let named = Self.multifdError(destination)?.channel
        #expect(named != nil, "destination: \(destinationError)")
        if channels == 1 { #expect(named == 0) }
        #expect(s.sourceIntact, "the source guest runs again, every source handler cleaned up with false")
        #expect(s.destinationCleanedUp)
    }

    @Test func onWithoutChannelsIsRefusedAtStart() async throws {
        let s = try MultifdScenario(devices: 1)
        var p = MultifdScenario.parameters(channels: 0)
        p.multifdTransfer[HandlerIdentity.Key(MultifdScenario.deviceID(0))] = .on
        let (source, destination) = await s.migrate(p)
        guard let text = source.error as? MigrationError, text.code == .invalidParameters else {
            Issue.record("source: \(String(describing: source.error))")
            return
        }
        #expect(text.message.contains("multifd") && text.message.contains(MultifdScenario.deviceID(0)))
        guard (destination.error as? MigrationError)?.code == .invalidParameters else {
            Issue.record("destination: \(String(describing: destination.error))")
            return
        }
        #expect(s.sourceVM.isRunning && s.sourceVM.stops == 0)
    }

    @Test func onForAHandlerWithoutSupportIsRefused() async throws {
        let s = try MultifdScenario(devices: 1)
        var p = MultifdScenario.parameters(channels: 1)
        p.multifdTransfer[HandlerIdentity.Key("ram")] = .on
        var destination = MultifdScenario.parameters(channels: 1)
        destination.stallTimeout = .milliseconds(300)
        let (source, _) = await s.migrate(p, destination: destination)
        guard let text = source.error as? MigrationError, text.code == .invalidParameters else {
            Issue.record("source: \(String(describing: source.error))")
            return
        }
        #expect(text.message.contains("\"ram\"") || text.message.contains("ram ("))
    }

    @Test func aSettingOnOnlyAtTheSourceIsAClearError() async throws {
        let s = try MultifdScenario(devices: 1)
        var destination = MultifdScenario.parameters(channels: 1)
        destination.multifdTransfer[HandlerIdentity.Key(MultifdScenario.deviceID(0))] = .off
        let (source, incoming) = await s.migrate(MultifdScenario.parameters(channels: 1), destination: destination)
        guard case .transferOff(_, let device)? = Self.multifdError(incoming) else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(device.idstr == MultifdScenario.deviceID(0))
        #expect(source.error != nil && s.sourceIntact)
    }

    @Test func aSettingOnOnlyAtTheDestinationIsAClearError() async throws {
        let s = try MultifdScenario(devices: 1)
        var p = MultifdScenario.parameters(channels: 1)
        p.multifdTransfer[HandlerIdentity.Key(MultifdScenario.deviceID(0))] = .off
        let (source, incoming) = await s.migrate(p, destination: MultifdScenario.parameters(channels: 1))
        guard case .switchoverStartMissing(let device)? = Self.multifdError(incoming) else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(device.idstr == MultifdScenario.deviceID(0))
        #expect(source.error != nil && s.sourceIntact)
    }

    @Test func aDestinationWaitingForMoreChannelsGivesUpClearly() async throws {
        let s = try MultifdScenario(devices: 1)
        var destination = MultifdScenario.parameters(channels: 3)
        destination.stallTimeout = .milliseconds(300)
        let (source, incoming) = await s.migrate(MultifdScenario.parameters(channels: 1), destination: destination)
        guard case .channelSetup(let text)? = Self.multifdError(incoming) else {
            Issue.record("destination: \(String(describing: incoming.error))")
            return
        }
        #expect(text.contains("2 of 4"))
        #expect(source.error != nil && s.sourceIntact)
    }

    @Test func channelsOverTCPAndUnixSockets() async throws {
        for kind in ["tcp", "unix"] {
            let s = try MultifdScenario(devices: 3)
            let p = MultifdScenario.parameters(channels: 8)
            let listener: any MigrationListener
            let transport: any MigrationTransport
            if kind == "tcp" {
                let tcp = try TCPListener(host: "127.0.0.1", port: 0)
                listener = tcp
                transport = TCPTransport(host: "127.0.0.1", port: tcp.port)
            } else {
                let path = NSTemporaryDirectory() + "switchover-multifd-\(getpid()).sock"
                listener = try UnixSocketListener(path: path)
                transport = UnixSocketTransport(path: path)
            }
            let source = MigrationSource(registry: s.sourceRegistry, vm: s.sourceVM, configuration: machine, parameters: p)
            let destination = MigrationDestination(
                registry: s.destinationRegistry, vm: s.destinationVM, configuration: machine, parameters: p)
            async let r2 = capture { try await destination.run(accepting: listener) }
            async let r1 = capture { try await source.run(to: transport) }
            let (a, b) = await (r1, r2)
            _ = try a.get()
            let incoming = try b.get()
            #expect(incoming.multifdChannels == 8, "\(kind)")
            #expect(s.expectIdentical(), "\(kind)")
        }
    }

    @Test func channelsOverConnectedSocketpairs() async throws {
        let s = try MultifdScenario(devices: 3)
        let p = MultifdScenario.parameters(channels: 3)
        var sourceEnds: [any MigrationConnection] = []
        var destinationEnds: [any MigrationConnection] = []
        for _ in 0..<4 {
            let (a, b) = try DescriptorConnection.socketPair()
            sourceEnds.append(a)
            destinationEnds.append(b)
        }
        let source = MigrationSource(registry: s.sourceRegistry, vm: s.sourceVM, configuration: machine, parameters: p)
        let destination = MigrationDestination(registry: s.destinationRegistry, vm: s.destinationVM, configuration: machine, parameters: p)
        let main = sourceEnds[0]
        let channels = Array(sourceEnds[1...])
        // The destination gets them in another order and classifies them.
        let incomingMain = destinationEnds[2]
        let incomingOthers = [destinationEnds[0], destinationEnds[3], destinationEnds[1]]
        async let r1 = capture { try await source.run(over: main, multifdChannels: channels) }
        async let r2 = capture { try await destination.run(over: incomingMain, multifdChannels: incomingOthers) }
        let (a, b) = await (r1, r2)
        _ = try a.get()
        _ = try b.get()
        #expect(s.expectIdentical())
    }
}
