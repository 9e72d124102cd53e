import ExampleVM
import Foundation
import FuzzSupport
import MLX5Handler
import MigrationCore
import MigrationStream
import Synchronization

// Writes the seed corpora of every fuzz target into OUTDIR/<target>/: the committed stream
// fixtures and match tables, and captures of real migrations of FuzzMachine's example machine
// over in-process sockets (the main stream, the multifd channels, the return path).
// Usage: fuzz-seeds OUTDIR REPO_ROOT

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: fuzz-seeds OUTDIR REPO_ROOT\n".utf8))
    exit(2)
}
let out = URL(fileURLWithPath: arguments[1])
let repo = URL(fileURLWithPath: arguments[2])
/// How many seeds were written.
let written = Mutex(0)

func seed(_ target: String, _ name: String, _ bytes: [UInt8]) throws {
    let dir = out.appendingPathComponent(target)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    try Data(bytes).write(to: dir.appendingPathComponent(name))
    written.withLock { $0 += 1 }
}

/// The source's end of a connection, keeping what it writes (stream or channel) and what it
/// reads (the return path).
final class Recorder: MigrationConnection, Sendable {
    let base: any MigrationConnection
    let sent = Mutex<[UInt8]>([])
    let received = Mutex<[UInt8]>([])
    init(_ base: any MigrationConnection) { self.base = base }
    var supportsReturnPath: Bool { base.supportsReturnPath }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try base.read(into: buffer)
        received.withLock { $0.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
        return n
    }
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try base.write(bytes)
        sent.withLock { $0.append(contentsOf: bytes) }
    }
    func setTimeouts(read: Duration?, write: Duration?) { base.setTimeouts(read: read, write: write) }
    func shutdown() { base.shutdown() }
    func close() { base.close() }
}

/// One migration of the fuzz machine in `mode`; the source's connections in connect order.
func capture(_ mode: FuzzMachine.Mode) async throws -> [Recorder] {
    let recorders = Mutex<[Int: Recorder]>([:])
    let transport = SocketPairTransport { index, connection in
        let r = Recorder(connection)
        recorders.withLock { $0[index] = r }
        return r
    }
    let parameters = FuzzMachine.parameters(mode)
    let sourceMachine = try ExampleMachine(FuzzMachine.configuration, role: .source)
    let destinationMachine = try ExampleMachine(FuzzMachine.configuration, role: .destination)
    defer {
        sourceMachine.shutdown()
        destinationMachine.shutdown()
    }
    try sourceMachine.start()
    let listener = try transport.listen()
    let destination = MigrationDestination(
        registry: destinationMachine.registry, vm: destinationMachine,
        configuration: destinationMachine.machine, parameters: parameters)
    let source = MigrationSource(
        registry: sourceMachine.registry, vm: sourceMachine,
        configuration: sourceMachine.machine, parameters: parameters)
    async let incoming = destination.run(accepting: listener)
    let outgoing = try await source.run(to: transport)
    _ = try await incoming
    _ = outgoing
    return recorders.withLock { all in all.keys.sorted().map { all[$0]! } }
}

func run() async throws {
    // inspect: the committed QEMU fixtures, whole and cut short, and our own streams.
    let fixtures = repo.appendingPathComponent("Tests/MigrationStreamTests/Fixtures")
    for name in try FileManager.default.contentsOfDirectory(atPath: fixtures.path).sorted() where name.hasSuffix(".mig") {
        let bytes = [UInt8](try Data(contentsOf: fixtures.appendingPathComponent(name)))
        try seed("fuzz-stream-walker", name, bytes)
        try seed("fuzz-stream-walker", name + ".head", Array(bytes.prefix(64 << 10)))
    }
    for (label, raw) in [("ack", UInt8(0x01)), ("plain", 0x00), ("qemu", 0x0C), ("ack-pieces", 0x31)] {
        let mode = FuzzMachine.Mode(raw)
        let recorders = try await capture(mode)
        let main = recorders[0].sent.withLock { $0 }
        let returnPath = recorders[0].received.withLock { $0 }
        try seed("fuzz-stream-walker", "example-\(label).mig", main)
        try seed("fuzz-destination", "example-\(label)", [raw] + main)
        if mode.returnPath {
            try seed("fuzz-return-path", "reader-\(label)", [raw & 0x7F] + returnPath)
            try seed("fuzz-return-path", "source-\(label)", [raw | 0x80] + returnPath)
        }
    }
    for (label, raw) in [("multifd", UInt8(0x02)), ("multifd-ack", 0x03)] {
        let recorders = try await capture(FuzzMachine.Mode(raw))
        let parts = recorders.map { r in r.sent.withLock { $0 } }
        guard parts.count == 3 else { throw CocoaError(.featureUnsupported) }
        try seed("fuzz-stream-walker", "example-\(label).mig", parts[0])
        try seed("fuzz-destination", "example-\(label)", [raw] + FuzzInput.frame([parts[0], parts[1]]) + parts[2])
        // The classifier sees the channels first, then only the main stream's first bytes.
        try seed("fuzz-multifd", "channels-\(label)", [0x02] + FuzzInput.frame([parts[1], parts[2]]) + Array(parts[0].prefix(64)))
        try seed("fuzz-return-path", "reader-\(label)", [raw & 0x7D] + recorders[0].received.withLock { $0 })
    }
    // mlx5 records: an initial image with its STOP_COPY_SIZE announcement, a final image, an
    // optional record of an unknown tag.
    func record(_ tag: MLX5RecordTag, flags: UInt32 = 0, _ payload: [UInt8]) -> [UInt8] {
        MLX5RecordHeader(payloadSize: UInt64(payload.count), flags: flags, tag: tag).bytes + payload
    }
    let stopCopy = (0..<8).map { UInt8(truncatingIfNeeded: (40_000 as UInt64) >> (8 * UInt64($0))) }
    let image = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    try seed("fuzz-mlx5-records", "initial", [0] + record(.stopCopySize, flags: 1, stopCopy) + record(.firmwareData, image))
    try seed(
        "fuzz-mlx5-records", "final-pieces",
        [5] + record(.firmwareData, image) + record(MLX5RecordTag(rawValue: 9), flags: 1, [1, 2, 3])
            + record(.stopCopySize, flags: 1, stopCopy) + record(.stopCopySize, flags: 1, stopCopy))
    // Match tables: the shipped ones.
    for path in ["Sources/MLX5Handler/devices.matchtable", "Sources/VFIOPCIHandler/VFIODrivers.matchtable"] {
        let bytes = [UInt8](try Data(contentsOf: repo.appendingPathComponent(path)))
        try seed("fuzz-match-table", path.split(separator: "/")[1] + ".matchtable", bytes)
    }
    // sysfs: a vfio-pci-bound mlx5 VF as the kernel lays it out, and a PF with VFs.
    func entry(_ kind: UInt8, _ text: String) -> [UInt8] {
        let b = Array(text.utf8)
        return [kind, UInt8(b.count >> 8), UInt8(b.count & 0xFF)] + b
    }
    let vf =
        entry(1, "0x15b3\n") + entry(1, "0x101e\n") + entry(1, "0x020000\n") + entry(1, "0x15b3\n") + entry(1, "0x0047\n")
        + entry(1, "0x00\n") + entry(1, "(null)\n") + entry(1, "0\n") + entry(0, "") + entry(2, "../../../bus/pci/drivers/vfio-pci")
        + entry(2, "../../../kernel/iommu_groups/7") + entry(2, "../0000:00:00.0") + entry(0, "") + entry(0, "") + entry(0, "")
        + entry(3, "vfio3") + entry(1, String(repeating: "\u{1}", count: 64))
    try seed("fuzz-sysfs", "vf", vf)
    let pf =
        entry(1, "0x15b3") + entry(1, "0x101d") + entry(1, "0x020000") + entry(0, "") + entry(0, "") + entry(1, "0x01")
        + entry(1, "vfio-pci") + entry(1, "-1") + entry(1, "2") + entry(2, "../../../bus/pci/drivers/vfio-pci")
        + entry(2, "../../../kernel/iommu_groups/7") + entry(0, "") + entry(2, "../0000:00:01.1") + entry(2, "../0000:00:01.2")
        + entry(0, "") + entry(3, "vfio0/vfio12") + entry(0, "")
    try seed("fuzz-sysfs", "pf", pf)
    // Section filter: the QEMU fixtures (each with a VMDESCRIPTION trailer) under a few modes:
    // keep all, keep none, keep the VFIO sections (by parity in 1-byte reads), odd pieces.
    for name in try FileManager.default.contentsOfDirectory(atPath: fixtures.path).sorted() where name.hasSuffix(".mig") {
        let bytes = [UInt8](try Data(contentsOf: fixtures.appendingPathComponent(name)))
        for (label, mode) in [("all", UInt8(0x00)), ("none", 0x05), ("vfio", 0x0A), ("parity-bytes", 0x33), ("early-close", 0x40)] {
            try seed("fuzz-section-filter", "\(name).\(label)", [mode] + bytes)
        }
        try seed("fuzz-section-filter", "\(name).head", [0x0C] + Array(bytes.prefix(64 << 10)))
    }
    for (label, raw) in [("plain", UInt8(0x00)), ("ack", 0x01)] {
        let main = try await capture(FuzzMachine.Mode(raw))[0].sent.withLock { $0 }
        try seed("fuzz-section-filter", "example-\(label)", [0x02] + main)
    }
    for (label, answers) in VFIOReplies.seeds { try seed("fuzz-vfio-replies", label, answers) }
    print("fuzz-seeds: \(written.withLock { $0 }) seeds in \(out.path)")
}

let done = DispatchSemaphore(value: 0)
let failure = Mutex<String?>(nil)
Task.detached {
    do { try await run() } catch { failure.withLock { $0 = "\(error)" } }
    done.signal()
}
done.wait()
if let message = failure.withLock({ $0 }) {
    FileHandle.standardError.write(Data("fuzz-seeds: \(message)\n".utf8))
    exit(1)
}
