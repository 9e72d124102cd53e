// The steps of the QEMU peer test that run on our side: loading a QEMU file into a real mtty device
// through the engine and the generic handler, and a live source towards a QEMU destination.

#if os(Linux)
import Glibc
import KernelTestSupport
import MigrationCore
import MigrationStream
import MigrationTLS
import Synchronization
import VFIO
import VFIOPCIHandler

enum PeerSteps {
    static func pass(_ name: String) { say("PASS \(name)") }
    static func fail(_ name: String, _ reason: String) { say("FAIL \(name): \(reason)") }
    static func info(_ text: String) { say("  info: \(text)") }
    /// One line, flushed at once: the console interleaves it with QEMU's and the script's.
    static func say(_ line: String) { KernelTestSupport.printLine(line) }

    /// An mdev through /dev/vfio/vfio and /dev/vfio/<group>.
    static func openDevice(_ uuid: String) throws -> KernelVFIODevice {
        try KernelVFIODevice.open(.mdev(uuid), access: .group)
    }
    static func hex(_ bytes: [UInt8]) -> String { KernelTestSupport.hex(bytes) }

    // MARK: QEMU file → device

    static func fileToDevice(path: String, uuid: String) -> Int32 {
        step("qemu-file-loaded-by-switchover") {
            let file = try QEMUFile(path: path)
            let content = try file.vfioContent()
            guard content.count == 1, let qemu = content.first else {
                throw StepFailure("\(content.count) VFIO devices in \(path), expected 1")
            }
            info(
                "\(path): machine \(file.configuration.machineType), \(file.records.count) records, VFIO device \(qemu.idstr) "
                    + "instance \(qemu.instanceID) version \(qemu.versionID), \(qemu.data.count) data bytes, config state \(qemu.config?.count ?? 0) bytes"
            )
            for line in qemu.items { info("  \(line)") }
            let device = try openDevice(uuid)
            let config = kernelConfigState(device)
            let handler = VFIOPCIHandler(device: device, config: config)
            let registry = HandlerRegistry()
            try registry.register(handler, idstr: qemu.idstr, instanceID: qemu.instanceID, versionID: qemu.versionID)
            var parameters = MigrationParameters()
            parameters.extensions = false
            parameters.switchoverAck = false
            // The library's path for a QEMU file (switchover incoming --devices-only): the sections
            // without a handler here are skipped by their VMDESCRIPTION sizes.
            let selection = try SectionSelection(fileAt: path) { registry.entry(idstr: $0, instanceID: $1) != nil }
            info(
                "selection: kept \(selection.kept.joined(separator: ", ")) (\(selection.keptBytes) bytes in \(selection.ranges.count) ranges), "
                    + "skipped \(selection.skipped.count) sections: \(selection.skipped.prefix(8).map(\.idstr).joined(separator: ", "))")
            let destination = MigrationDestination(
                registry: registry, vm: FlagGuest(running: false), configuration: file.configuration, parameters: parameters)
            let transport = SelectedFileTransport(path: path, selection: selection)
            let statistics = try KernelTestSupport.wait { try await destination.run(from: transport) }
            info(
                "loaded \(statistics.bytesTransferred) bytes (the file's VFIO sections); handler loaded \(handler.statistics.loadedBytes) data bytes"
            )
            if let loaded = config.lastLoaded, let sent = qemu.config {
                info(
                    "QEMU's config state: PCIDevice version \(loaded.version), INTx \(loaded.interruptLevels), "
                        + "vendor/device \(hex(Array(loaded.configSpace[0..<4]))), command \(hex(Array(loaded.configSpace[4..<6]))), \(sent.count) bytes"
                )
            }
            let ours = try config.save()
            if let theirs = qemu.config {
                let differing = zip(ours, theirs).enumerated().filter { $0.element.0 != $0.element.1 }.map { $0.offset }
                info(
                    "our config state for this device: \(ours.count) bytes (QEMU's \(theirs.count)); "
                        + "\(differing.count) bytes differ\(differing.isEmpty ? "" : " at " + differing.prefix(16).map { "\($0)" }.joined(separator: ","))"
                )
            }
            let saved = try readStateOut(device)
            info("QEMU's data:       \(hex(qemu.data))")
            info("the device saves:  \(hex(saved))")
            guard !qemu.data.isEmpty, saved == qemu.data else {
                throw StepFailure("the device saves \(saved.count) bytes that differ from QEMU's \(qemu.data.count)")
            }
            guard qemu.config?.count == config.byteCount else {
                throw StepFailure("QEMU's config state has \(qemu.config?.count ?? 0) bytes, the QEMU layout \(config.byteCount)")
            }
        }
    }

    static func fileData(path: String) -> Int32 {
        do {
            let content = try QEMUFile(path: path).vfioContent()
            guard content.count == 1, let qemu = content.first else {
                print("error: \(content.count) VFIO devices in \(path), expected 1")
                return 1
            }
            for line in qemu.items { info(line) }
            say("data \(hex(qemu.data))")
            say("config \(hex(qemu.config ?? []))")
            return 0
        } catch {
            print("error: \(error)")
            return 1
        }
    }

    // MARK: Live source → QEMU

    static func source(uuid: String, host: String, port: String, machine: String, tls: String? = nil) -> Int32 {
        let name = tls == nil ? "switchover-source-to-qemu-live" : "switchover-source-to-qemu-tls"
        guard let portNumber = UInt16(port) else {
            fail(name, "bad port \(port)")
            return 2
        }
        return step(name) {
            let live = try LiveDevice(uuid: uuid)
            let (device, handler) = (live.device, live.handler)
            // A guest's writes, so this device's state differs from a fresh one: three bytes into
            // port 0's FIFO, a line-control value into port 1 (16550 registers in I/O BARs 0 and 1).
            for byte: UInt8 in [0x51, 0x45, 0x4d] { try check(device.writeRegion(0, offset: 0, bytes: [byte]), "write BAR0") }
            try check(device.writeRegion(1, offset: 3, bytes: [0x1b]), "write BAR1+3")
            var parameters = LiveDevice.parameters
            parameters.switchoverBandwidth = 1 << 30
            let guest = FlagGuest(running: true)
            let source = MigrationSource(
                registry: live.registry, vm: guest, configuration: MachineConfiguration(machineType: machine),
                parameters: parameters)
            let tcp = PatientTransport(TCPTransport(host: host, port: portNumber), timeout: .seconds(60), retry: .milliseconds(100))
            let transport: any MigrationTransport
            if let tls {
                // QEMU's tls-creds-x509 with verify-peer=on: our client certificate, its server's
                // checked against the CA and the host. GnuTLS sends no session ticket to wait for.
                var configuration = TLSConfiguration(directory: tls, hostname: host)
                configuration.awaitServerConfirmation = false
                configuration.handshakeTimeout = .seconds(60)
                transport = TLSTransport(base: tcp, configuration: configuration)
            } else {
                transport = tcp
            }
            let statistics = try KernelTestSupport.wait { try await source.run(to: transport) }
            let entry = statistics.handlers.first
            info(
                "\(statistics.bytesTransferred) bytes, \(statistics.iterations) iterations, downtime \(statistics.downtime.map { "\($0)" } ?? "-"), "
                    + "ends at \(statistics.downtimeEnd), ack \(entry.map { "\($0.ackState)" } ?? "-")")
            info(
                "handler: \(handler.statistics.preCopyBytes) pre-copy bytes, \(handler.statistics.stopCopyBytes) stop-copy bytes, "
                    + "INIT_DATA_SENT \(handler.statistics.initDataSent)")
            let sent = try readStateOut(device)
            say("sent \(hex(sent))")
            guard source.acknowledgement.acknowledged else { throw StepFailure("QEMU sent no SWITCHOVER_ACK") }
            guard statistics.downtimeEnd == .destinationShut else {
                throw StepFailure("QEMU did not send SHUT (\(statistics.downtimeEnd))")
            }
            guard handler.statistics.initDataSent else { throw StepFailure("INIT_DATA_SENT was not sent") }
        }
    }

    // MARK: Live QEMU → destination

    static func destination(uuid: String, host: String, port: String, machine: String) -> Int32 {
        let name = "qemu-source-to-switchover-live"
        guard let portNumber = UInt16(port) else {
            fail(name, "bad port \(port)")
            return 2
        }
        return step(name) {
            let live = try LiveDevice(uuid: uuid)
            let (device, config, handler, registry) = (live.device, live.config, live.handler, live.registry)
            var parameters = LiveDevice.parameters
            // QEMU's trailer, if it sends one, is not needed: the SHUT follows EOF.
            parameters.vmDescription = false
            let recorder = FilteredListener.Recorder()
            let listener = FilteredListener(base: try TCPListener(host: host, port: portNumber), recorder: recorder) { idstr, _ in
                registry.entry(idstr: idstr, instanceID: 0) != nil
            }
            say("listening on tcp:\(host):\(port)")
            let destination = MigrationDestination(
                registry: registry, vm: FlagGuest(running: false), configuration: MachineConfiguration(machineType: machine),
                parameters: parameters)
            let statistics = try KernelTestSupport.wait { try await destination.run(accepting: listener) }
            let skipped = recorder.connection?.skippedBytes ?? [:]
            info(
                "loaded \(statistics.bytesTransferred) bytes of the filtered stream; handler loaded \(handler.statistics.loadedBytes) data bytes, "
                    + "acknowledged \(handler.statistics.acknowledged); skipped \(skipped.values.reduce(0, +)) bytes of \(skipped.count) sections "
                    + "(\(skipped.keys.sorted().prefix(10).joined(separator: ", ")))")
            let loaded = try readStateOut(device)
            say("loaded \(hex(loaded))")
            guard handler.statistics.loadedBytes > 0, config.lastLoaded != nil else {
                throw StepFailure("no device data or no config state arrived")
            }
        }
    }

    // MARK: Helpers

    /// Runs one step: `PASS name` when `body` returns, `FAIL name: reason` when it throws (the
    /// error as text: a ``StepFailure`` is its reason); the exit status, 0 or 1.
    static func step(_ name: String, _ body: () throws -> Void) -> Int32 {
        do {
            try body()
            pass(name)
            return 0
        } catch {
            fail(name, "\(error)")
            return 1
        }
    }

    /// Why a step failed, as its FAIL line gives it.
    struct StepFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// The mdev of a live step as QEMU's guest has it: the generic handler with QEMU's config
    /// layout (``kernelConfigState(_:)``), registered under 0000:00:04.0's idstr, instance 0.
    struct LiveDevice {
        static let idstr = VFIOPCIHandler.idstr(for: "0000:00:04.0")
        /// What both live steps run with: QEMU's protocol without Switchover's extensions,
        /// switchover-ack on.
        static var parameters: MigrationParameters {
            var parameters = MigrationParameters()
            parameters.extensions = false
            parameters.switchoverAck = true
            return parameters
        }

        let device: KernelVFIODevice
        let config: QEMUPCIConfigState
        let handler: VFIOPCIHandler
        let registry = HandlerRegistry()

        init(uuid: String) throws {
            device = try openDevice(uuid)
            config = kernelConfigState(device)
            handler = VFIOPCIHandler(device: device, config: config)
            try registry.register(handler, idstr: Self.idstr, instanceID: 0, versionID: VFIOPCIHandler.sectionVersion)
        }
    }

    /// The config state in QEMU's layout, read from and written to the device's VFIO config region
    /// (mtty's is 255 bytes: the rest of the 4096-byte PCIe layout is zeros, as in QEMU's).
    static func kernelConfigState(_ device: KernelVFIODevice) -> QEMUPCIConfigState {
        QEMUPCIConfigState(device: device, express: true)
    }

    static func check<T>(_ result: Result<T, VFIOErrno>, _ what: String) throws -> T {
        switch result {
        case .success(let value): return value
        case .failure(let errno): throw QEMUFileError(description: "\(what): \(errno)")
        }
    }

    /// The device's whole state: → STOP_COPY (a fresh fd from STOP or RUNNING), read to the end, → RUNNING.
    static func readStateOut(_ device: KernelVFIODevice) throws -> [UInt8] { try KernelTestSupport.readStateOut(device) }
}
/// A TCP listener whose accepted connection passes on only the sections `keep` names (MigrationCore's
/// SectionFilteringConnection); the recorder keeps it for the step's report.
final class FilteredListener: MigrationListener {
    final class Recorder: Sendable {
        private let accepted = Mutex<SectionFilteringConnection?>(nil)
        var connection: SectionFilteringConnection? {
            get { accepted.withLock { $0 } }
            set { accepted.withLock { $0 = newValue } }
        }
    }

    let base: TCPListener
    let recorder: Recorder
    let keep: @Sendable (String, UInt32) -> Bool

    init(base: TCPListener, recorder: Recorder, keep: @escaping @Sendable (String, UInt32) -> Bool) {
        (self.base, self.recorder, self.keep) = (base, recorder, keep)
    }

    func accept() throws -> any MigrationConnection {
        let connection = SectionFilteringConnection(base: try base.accept(), keep: keep)
        recorder.connection = connection
        return connection
    }

    func close() { base.close() }
}
#endif
