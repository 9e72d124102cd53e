import ExampleVM
import FuzzSupport
import LibFuzzerDriver
import MigrationCore

// The destination engine fed from bytes, as `switchover incoming` runs it, with the shipped
// handlers of an example machine registered (ram, mlx5, generic VFIO-PCI, mtty over
// simulated devices). Input: a mode byte (FuzzMachine.Mode), then either the main stream
// (no multifd) or three parts framed be32 length + bytes: main stream, channel 0, channel 1
// (any order: the engine classifies them by their first bytes).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    let mode = FuzzMachine.Mode(input.byte())
    let parts = mode.multifd ? [input.part(), input.part(), input.rest()] : [input.rest()]
    let connections = parts.map { MemoryConnection($0, pieceSize: mode.pieceSize, supportsReturnPath: mode.returnPath) }
    let machine: ExampleMachine
    do {
        machine = try ExampleMachine(FuzzMachine.configuration, role: .destination)
    } catch {
        fatalError("cannot build the example machine: \(error)")
    }
    let destination = MigrationDestination(
        registry: machine.registry, vm: machine, configuration: machine.machine,
        parameters: FuzzMachine.parameters(mode))
    _ = runBlocking {
        (try? await destination.run(over: connections[0], multifdChannels: Array(connections.dropFirst()))) != nil
    }
    _ = machine.digests
    machine.shutdown()
    return 0
}

runLibFuzzer(fuzzOne)
