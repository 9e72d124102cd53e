// One suite of behaviour checks for a pair of mtty-like VFIO migration devices (flags 7, the mtty
// stream of spec §7): run by kernel-vfio-check inside the QEMU guest against two real mtty-2 mdevs,
// and by VFIOTests against two `SimulatedVFIODevice(.mtty(ports: 2))`. Every check must pass on both:
// the kernel is the ground truth, and where the simulator differed it was fixed (docs/kernel-test.md).
//
// The checks use the typed API where it can express the request, and the raw escape hatch
// (VFIORawAccess.swift) for what it deliberately refuses or interprets: invalid states,
// STOP_COPY→PRE_COPY, argument errors, the errno or byte count of one read or write.

import SystemPackage

/// swift-system's `Errno`, for package code that does not depend on swift-system itself
/// (kernel-vfio-check).
package typealias VFIOErrno = Errno

/// How a request that may never return came back.
package enum VFIOGuardedOutcome: Sendable, Equatable {
    /// It returned: its errno, nil on success.
    case returned(Errno?)
    /// It did not return before the deadline (a kernel without the STOP_COPY→PRE_COPY fix).
    case hung
    /// The guard lost the answer: what happened instead (kernel-vfio-check: its child was killed by a
    /// signal, or exited without reporting one).
    case failed(String)
}

/// The behaviour checks; see the file comment. Checks run in order and build on one another (the source's
/// stream read in PRE_COPY is what is later resumed into the destination).
package final class VFIOBehaviourChecks {
    package struct Options {
        /// The mtty port count both devices have (mtty-2: 2).
        package var ports = 2
        /// Changes the source's device state as a guest would, before anything is saved, so the migrated
        /// bytes differ from a fresh device's (kernel-vfio-check writes to the mtty BARs). Two simulated
        /// devices with different seeds already differ: nil.
        package var prepareSource: ((inout VFIOCheck) throws -> Void)?
        /// Runs the first STOP_COPY→PRE_COPY request, which spins forever in kernels without the FSM fix.
        /// kernel-vfio-check asks it from a child process with a deadline; in-process by default.
        package var guardedRequest: (_ request: () -> Errno?) -> VFIOGuardedOutcome = { .returned($0()) }

        package init() {}
    }

    /// How a run ended.
    package enum Completion: Sendable, Equatable {
        case completed
        /// A request hung: the device's state lock stays held, so nothing more can be asked of it.
        case stoppedByHang
    }

    let source: any VFIOMigrationDevice
    let destination: any VFIOMigrationDevice
    let sourceClient: VFIODeviceClient
    let destinationClient: VFIODeviceClient
    let options: Options

    /// The mtty stream: 24-byte header, 36 bytes per port.
    static let headerSize = 24
    static let portSize = 36
    static let mttyMagic: UInt64 = 0x7E9D_0989_8C3E_2C4E
    var streamSize: Int { Self.headerSize + Self.portSize * options.ports }
    static let expectedFlags: VFIOMigrationFlags = [.stopCopy, .p2p, .preCopy]

    /// The source's stream as it came out through PRE_COPY then STOP_COPY.
    var sourceStream: [UInt8] = []
    /// The destination's state before anything was resumed into it.
    var destinationBefore: [UInt8] = []
    /// The source's save fd, carried from PRE_COPY through STOP_COPY.
    var saveFD: VFIOMigrationDataFD?
    var hung = false

    /// Both devices must be a `KernelVFIODevice` or a `SimulatedVFIODevice` (the raw calls go through
    /// their client).
    package init(
        source: any VFIOMigrationDevice, destination: any VFIOMigrationDevice, options: Options = Options()
    ) throws(VFIOCheckAbort) {
        guard let s = source as? any VFIOClientBackedDevice, let d = destination as? any VFIOClientBackedDevice else {
            throw VFIOCheckAbort("the behaviour checks need kernel-backed or simulated devices (raw uAPI access)")
        }
        self.source = source
        self.destination = destination
        self.sourceClient = s.client
        self.destinationClient = d.client
        self.options = options
    }

    /// The check names, in the order `run(into:)` runs them.
    package var checkNames: [String] {
        checks.map(\.name) + VFIOFlags7Reference.columns.map { "state-pairs-from-\($0)" }
    }

    private var checks: [(name: String, body: (VFIOBehaviourChecks) -> (inout VFIOCheck) throws -> Void)] {
        [
            ("migration-flags", { $0.migrationFlags }),
            ("mig-data-size", { $0.migDataSize }),
            ("feature-probe", { $0.featureProbe }),
            ("feature-argument-errors", { $0.featureArgumentErrors }),
            ("initial-state-running", { $0.initialState }),
            ("invalid-state-requests", { $0.invalidStateRequests }),
            ("destination-initial-readout", { $0.destinationInitialReadout }),
            ("prepare-source", { $0.prepareSource }),
            ("running-to-pre-copy", { $0.runningToPreCopy }),
            ("precopy-info", { $0.precopyInfo }),
            ("pre-copy-read-to-temporary-end", { $0.preCopyRead }),
            ("data-fd-stream-only", { $0.dataFDStreamOnly }),
            ("pre-copy-p2p-to-stop-copy", { $0.preCopyToStopCopy }),
            ("stop-copy-refuses-pre-copy", { $0.stopCopyRefusesPreCopy }),
            ("session-end-disables-fd", { $0.sessionEndDisablesFD }),
            ("stop-to-stop-copy-fresh-fd", { $0.stopToStopCopyFreshFD }),
            ("resume-destination", { $0.resumeDestination }),
            ("destination-readback-matches-source", { $0.destinationReadback }),
            ("resume-bad-header", { $0.resumeBadHeader }),
            ("resume-bad-header-bytes-consumed", { $0.resumeBadHeaderConsumed }),
            ("resume-overflow", { $0.resumeOverflow }),
            ("resume-short-then-stop", { $0.resumeShort }),
            ("reset-disables-save-fd", { $0.resetDisablesSaveFD })
        ]
    }

    /// Runs every check into `report`. Stops early only when a request hung.
    @discardableResult
    package func run(into report: inout VFIOCheckReport) -> Completion {
        for (name, body) in checks {
            report.run(name, body(self))
            if hung { return .stoppedByHang }
        }
        for current in VFIOFlags7Reference.columns {
            report.run("state-pairs-from-\(current)") { try self.statePairs(from: current, &$0) }
        }
        return .completed
    }

    // MARK: - Helpers

    /// Reads with one raw `read(2)` of `chunk` bytes at a time until one returns 0; the bytes and each
    /// read's size.
    func rawDrain(_ fd: VFIOMigrationDataFD, chunk: Int = 4096) -> Result<(bytes: [UInt8], reads: [Int]), Errno> {
        var bytes: [UInt8] = []
        var reads: [Int] = []
        while bytes.count <= 1 << 20 {
            switch fd.rawRead(count: chunk) {
            case .failure(let errno): return .failure(errno)
            case .success(let piece):
                reads.append(piece.count)
                if piece.isEmpty { return .success((bytes, reads)) }
                bytes += piece
            }
        }
        return .failure(.argListTooLong)
    }

    /// Reads through the typed API until it stops giving bytes; the bytes and how it stopped.
    func typedDrain(_ fd: VFIOMigrationDataFD, chunk: Int = 4096) throws(VFIOError) -> (bytes: [UInt8], end: VFIODataReadResult) {
        var bytes: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let result = try fd.read(into: buffer)
            guard case .bytes(let n) = result else { return (bytes, result) }
            bytes += buffer[0..<n]
        }
    }

    /// RUNNING → STOP_COPY, read everything with the typed API, back to RUNNING.
    func readStateOut(_ device: any VFIOMigrationDevice, _ c: inout VFIOCheck) throws -> [UInt8] {
        guard let fd = try device.setState(.stopCopy) else { throw VFIOCheckAbort("\(device.name): STOP_COPY opened no data fd") }
        let (bytes, end) = try typedDrain(fd)
        c.expectEqual(end, .endOfStream, "\(device.name): how the STOP_COPY stream ended")
        try device.setState(.running)
        return bytes
    }

    /// Reset, then RUNNING → RESUMING; returns the resume fd.
    func enterResuming(_ device: any VFIOMigrationDevice) throws -> VFIOMigrationDataFD {
        try device.reset()
        guard let fd = try device.setState(.resuming) else { throw VFIOCheckAbort("\(device.name): RESUMING opened no data fd") }
        return fd
    }

    /// Writes `bytes` in pieces of the given sizes (the last piece takes the rest), one raw write each,
    /// each of which must be complete.
    func rawWriteAll(_ fd: VFIOMigrationDataFD, _ bytes: [UInt8], pieces: [Int] = []) throws(VFIOCheckAbort) {
        var offset = 0
        for size in pieces + [bytes.count] where offset < bytes.count {
            let end = min(bytes.count, offset + size)
            switch fd.rawWrite(Array(bytes[offset..<end])) {
            case .failure(let errno): throw VFIOCheckAbort("write of bytes \(offset)..<\(end): \(VFIOCheck.name(errno))")
            case .success(let n) where n != end - offset: throw VFIOCheckAbort("short write: \(n) of \(end - offset) bytes")
            case .success: offset = end
            }
        }
    }

    func checkHeader(_ bytes: [UInt8], _ c: inout VFIOCheck) {
        guard bytes.count >= Self.headerSize else {
            c.expect(false, "stream shorter than its header (\(bytes.count) bytes)")
            return
        }
        c.expectEqual(hex(LittleEndianBytes.load(UInt64.self, from: bytes, at: 0)), hex(Self.mttyMagic), "header magic")
        c.expectEqual(LittleEndianBytes.load(UInt32.self, from: bytes, at: 8), 1, "header major version")
        c.expectEqual(LittleEndianBytes.load(UInt32.self, from: bytes, at: 12), 0, "header minor version")
        c.expectEqual(LittleEndianBytes.load(UInt32.self, from: bytes, at: 16), UInt32(options.ports), "header nr_ports")
        c.expectEqual(LittleEndianBytes.load(UInt32.self, from: bytes, at: 20), 0, "header flags")
    }

    func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

    /// Where two byte arrays first differ, for failure messages.
    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String {
        guard a.count == b.count else { return "sizes \(a.count) and \(b.count)" }
        guard let index = a.indices.first(where: { a[$0] != b[$0] }) else { return "equal" }
        return "first at byte \(index): \(a[index]) vs \(b[index])"
    }
}
