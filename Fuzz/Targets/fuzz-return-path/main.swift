import ExampleVM
import FuzzSupport
import LibFuzzerDriver
import MigrationStream

@testable import MigrationCore

// What the source reads from the destination: the return path. Input: a mode byte, then the
// destination's messages. Even modes run the return-path reader thread alone (fast) and query
// what the migration thread asks of it; odd modes run a whole source migration of the example
// machine whose main stream goes nowhere and whose return path is the input (the pre-flight
// verdict, acks, load reports the downtime prediction and statistics use, SHUT).
/// The handlers the example machine registers: the only ones a LOAD_REPORT or ACK_STATE may name.
enum Known {
    static let keys: Set<HandlerIdentity.Key> = {
        var keys: Set<HandlerIdentity.Key> = [RAMHandler.identity.key]
        for name in (try? FuzzMachine.configuration.deviceNames()) ?? [] {
            keys.insert(HandlerIdentity.Key(name + VFIOSectionTag.idstrSuffix, instanceID: 0))
        }
        return keys
    }()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    let mode = FuzzMachine.Mode(input.byte() & ~0x0A)  // always a return path, no multifd
    let connection = MemoryConnection(input.rest(), pieceSize: mode.pieceSize)
    if mode.raw & 0x80 == 0 {
        let reader = SourceReturnPath(extensions: mode.extensions, known: Known.keys, clock: MonotonicClock(), logger: quietLogger())
        reader.start(reading: connection)
        guard reader.join(timeout: .seconds(10)) else { fatalError("the return-path reader did not end at the end of its input") }
        let keys = reader.state.withLock { Array($0.ackStates.keys) + Array($0.loadReports.keys) }
        _ = reader.acknowledged
        for key in keys { _ = reader.ackState(of: key, ackEnabled: mode.switchoverAck) }
        return 0
    }
    let machine: ExampleMachine
    do {
        machine = try ExampleMachine(FuzzMachine.configuration, role: .source)
    } catch {
        fatalError("cannot build the example machine: \(error)")
    }
    do {
        try machine.start()
    } catch {
        fatalError("cannot start the example machine: \(error)")
    }
    let source = MigrationSource(
        registry: machine.registry, vm: machine, configuration: machine.machine,
        parameters: FuzzMachine.parameters(mode))
    let watcher = Task { for await event in source.progress { _ = event.predictedDowntime } }
    _ = runBlocking { (try? await source.run(over: connection)) != nil }
    watcher.cancel()
    machine.shutdown()
    return 0
}

runLibFuzzer(fuzzOne)
