import MigrationCore

/// `body`'s outcome as a value: both ends of a migration run at once, and a test looks at each.
public func capture<T: Sendable>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

/// The parameters of the multifd test migrations: `channels` channels; a fixed switchover
/// bandwidth, so the decision never waits on a loaded machine's measurement; no destination
/// load time in it; a 120 s stall timeout (both ends share the test process's cooperative
/// threads with every other test, so under load one end may start long after the other).
public func multifdTestParameters(channels: Int) -> MigrationParameters {
    var p = MigrationParameters()
    p.multifdChannels = channels
    p.switchoverBandwidth = 1 << 30
    p.countDestinationLoadTime = false
    p.stallTimeout = .seconds(120)
    return p
}

/// Runs `source` and `destination` against each other over a ``SocketPairTransport``: the main
/// connection and every multifd channel a socketpair. `wrap` may wrap the source end of the
/// `index`-th connection (0 = main, 1… = channels 0…), to inject faults.
public func migrateOverSocketPairs(
    _ source: MigrationSource, _ destination: MigrationDestination,
    wrap: (@Sendable (Int, DescriptorConnection) -> any MigrationConnection)? = nil
) async -> (source: Result<MigrationStatistics, any Error>, destination: Result<IncomingStatistics, any Error>) {
    let transport = SocketPairTransport(wrapSource: wrap)
    async let s = capture { try await source.run(to: transport) }
    async let d = capture { try await destination.run(from: transport) }
    return await (s, d)
}
