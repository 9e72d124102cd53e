// What the migration's child processes share around MigrationCore's engines: the machine and the
// parameters both ends run, and how each builds its engine (the guest stand-in, the patient
// transport and the async bridge are KernelTestSupport's, shared with qemu-peer-check).

#if os(Linux)
import MigrationCore
import MigrationStream
import VFIOPCIHandler

enum EngineSupport {
    /// The machine both ends run.
    static let configuration = MachineConfiguration(machineType: "kernel-vfio-check")

    /// Both ends: switchover-ack on; a fixed switchover bandwidth (1 GiB/s, so a 300 ms threshold of
    /// ~300 MiB) makes the decision wait for the acknowledgement alone, not for a measurement.
    static var parameters: MigrationParameters {
        var parameters = MigrationParameters()
        parameters.switchoverAck = true
        parameters.switchoverBandwidth = 1 << 30
        return parameters
    }

    /// One end's engine, with `handler` registered under the idstr both ends use; and the
    /// handler's identity, to find it in the engine's statistics.
    static func engine<Engine: MigrationEngine>(
        _: Engine.Type, handler: some MigrationHandler, vm: any VMController
    ) throws -> (Engine, HandlerIdentity) {
        let registry = HandlerRegistry()
        let identity = try registry.register(handler, idstr: MigrationRole.idstr, versionID: VFIOPCIHandler.sectionVersion)
        return (Engine(registry: registry, vm: vm, configuration: configuration, parameters: parameters), identity)
    }
}
#endif
