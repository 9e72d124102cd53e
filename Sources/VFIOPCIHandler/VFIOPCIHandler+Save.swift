import MigrationCore
import MigrationStream
import VFIO

extension VFIOPCIHandler {
    public func savePrepare(context: SaveContext) throws {
        _ = try probeFlags(phase: "save prepare")
        try checkP2PBarrier(context: context)
    }

    public func saveSetup(to writer: StreamWriter, context: SaveContext) throws {
        let flags = try probeFlags(phase: "save setup")
        // MIG_DATA_SIZE may fail on some drivers; QEMU then uses its default buffer size.
        let stopCopy = (try? device.stopCopySize()) ?? UInt64(Self.defaultChunkSize)
        let size = tuning.chunkSize(stopCopySize: stopCopy)
        state.withLock {
            _ = $0.buffer(atLeast: size)
            $0.initialDataSent = false
            $0.stopCopyEntered = false
        }

        try writer.writeVFIOTag(.setupState)
        try writer.writeVFIOTag(.endOfState)

        if flags.contains(.preCopy), context.vmRunning {
            // REINIT (the 2026 uAPI) only where the destination can be told: a Switchover peer with
            // switchover-ack; a kernel without PRECOPY_INFOv2 answers ENOTTY and nothing changes.
            let reinit =
                context.switchoverAckEnabled && context.parameters.extensions
                && ((try? device.enablePrecopyInfoV2()) ?? false)
            state.withLock {
                $0.reportsReinit = reinit
                $0.reinitPending = false
            }
            let fd = try vfio("save setup: enter PRE_COPY") { () throws(VFIOError) in try device.setState(.preCopy) }
            guard let fd else {
                throw VFIOPCIHandlerError.badSection(device: device.name, offset: writer.bytesWritten, reason: "PRE_COPY opened no data fd")
            }
            let info = try vfio("save setup: precopy info") { () throws(VFIOError) in try fd.precopyInfo() }
            state.withLock {
                $0.dataFD = fd
                $0.inPreCopy = true
                $0.absorb(info)
            }
        }
    }

    public func isActiveIterate(context: SaveContext) -> Bool {
        state.withLock { $0.inPreCopy }
    }

    public func saveIterate(to writer: StreamWriter, context: SaveContext) throws -> IterationResult {
        let (fd, buffer, reinit) = state.withLock { s in
            defer { s.reinitPending = false }
            return (s.dataFD, s.buffer, s.reinitPending)
        }
        guard let fd, let buffer else {
            try writer.writeVFIOTag(.endOfState)
            return .done
        }
        // New initial data follows: the destination withdraws its acknowledgement first.
        if reinit { try writer.writeVFIOTag(.reinit) }
        let sendInitDataSent = try buffer.withBytes(upTo: buffer.count) { bytes in
            try preCopyStep(fd: fd, buffer: bytes, phase: "save iterate: read", context: context) {
                try writer.writeVFIODataChunk($0)
            }
        }
        try writer.writeVFIOTag(sendInitDataSent ? .initDataSent : .endOfState)
        return state.withLock { $0.initialBytes == 0 && $0.dirtyBytes == 0 } ? .done : .more
    }

    public func pendingEstimate(context: SaveContext) -> PendingBytes {
        state.withLock { $0.inPreCopy ? PendingBytes(mustPrecopy: [$0.initialBytes, $0.dirtyBytes].saturatingSum) : .zero }
    }

    public func pendingExact(context: SaveContext) throws -> PendingBytes {
        // Since QEMU 9.2 the exact figure is the stop-copy size alone; the pre-copy sizes are
        // refreshed for the next estimate.
        let stopCopy = (try? device.stopCopySize()) ?? Self.unknownStopCopySize
        if let fd = state.withLock({ $0.inPreCopy ? $0.dataFD : nil }), let info = try? fd.precopyInfo() {
            state.withLock { $0.absorb(info) }
        }
        return PendingBytes(mustPrecopy: stopCopy)
    }

    public func saveComplete(to writer: StreamWriter, context: SaveContext) throws {
        // Multifd: the data leaves in saveCompleteMultifd (concurrently); END is a dummy.
        if context.multifdTransfer {
            try writer.writeVFIOTag(.endOfState)
            return
        }
        // Normally the device entered STOP_COPY when the guest stopped (runStateChanged), behind
        // the P2P barrier; a handler driven without a VMRunState enters it here.
        try drainStopCopy(phase: "save complete", offset: writer.bytesWritten) { try writer.writeVFIODataChunk($0) }
        try writer.writeVFIOTag(.endOfState)
    }

    public func saveState(to writer: StreamWriter, context: SaveContext) throws {
        // Multifd: the config state is the last packet; FULL is a dummy (QEMU 10.0), or (QEMU 10.1
        // with load-config-after-iter) CONFIG_LOAD_READY alone, which tells the destination that
        // every section before this one is loaded and the config state may follow.
        if context.multifdTransfer {
            try writer.writeVFIOTag(loadConfigAfterIterations ? .configLoadReady : .endOfState)
            return
        }
        let bytes = try config.save()
        try writer.writeVFIOTag(.configState)
        try writer.writeBytes(bytes)
        try writer.writeVFIOTag(.endOfState)
    }

    public func saveCleanup(succeeded: Bool) {
        releaseSession()
        // After a completed migration the source device stops (QEMU does it in save_cleanup,
        // outside the downtime); after a failure or cancel it must run again.
        let target: VFIODeviceState = succeeded ? .stop : .running
        do {
            if try device.deviceState() != target { try device.setState(target) }
        } catch {
            try? device.reset()
        }
    }
}

extension VFIOPCIHandler {
    /// STOP_COPY, unless the device entered it when the guest stopped; the new save fd, if any.
    func enterStopCopy(phase: String) throws -> VFIOMigrationDataFD? {
        if state.withLock({ $0.stopCopyEntered }) { return nil }
        let opened = try vfio(phase) { () throws(VFIOError) in try device.setState(.stopCopy) }
        state.withLock { $0.stopCopyEntered = true }
        return opened
    }

    /// The stop-copy data, shared by the main-channel and multifd paths: enters STOP_COPY
    /// unless the device already has (from PRE_COPY the save fd carries on; otherwise STOP_COPY
    /// opens one), then reads the save fd to its end, hands each chunk to `emit` and counts it.
    /// `phase` names the caller in errors; `offset` is where in its stream the data would start.
    func drainStopCopy(phase: String, offset: Int, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let opened = try enterStopCopy(phase: "\(phase): enter STOP_COPY")
        let fd = state.withLock { s -> VFIOMigrationDataFD? in
            if let opened { s.dataFD = opened }
            s.inPreCopy = false
            return s.dataFD
        }
        guard let fd else {
            throw VFIOPCIHandlerError.badSection(device: device.name, offset: offset, reason: "STOP_COPY opened no data fd")
        }
        let buffer = state.withLock { $0.buffer ?? $0.buffer(atLeast: Self.defaultChunkSize) }
        while true {
            let n = try buffer.withBytes(upTo: buffer.count) { bytes -> Int? in
                let result = try vfio("\(phase): read") { () throws(VFIOError) -> VFIODataReadResult in try fd.read(into: bytes) }
                guard case .bytes(let n) = result else { return nil }
                try emit(UnsafeRawBufferPointer(rebasing: bytes[..<n]))
                return n
            }
            guard let n else { break }
            state.withLock {
                $0.counters.stopCopyBytes += UInt64(n)
                $0.counters.chunks += 1
            }
        }
    }

    /// One pre-copy step, shared by the main-channel and multifd paths: reads at most one
    /// chunk into `buffer` and hands it to `emit`, accounts it against the initial bytes first
    /// and then the dirty ones (as QEMU does), refreshes the sizes through the tuning when the
    /// device has nothing for now, and says whether INIT_DATA_SENT is due (once, when the
    /// initial bytes reach zero and switchover-ack is on).
    func preCopyStep(
        fd: VFIOMigrationDataFD, buffer: UnsafeMutableRawBufferPointer, phase: String, context: SaveContext,
        emit: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Bool {
        let result = try vfio(phase) { () throws(VFIOError) -> VFIODataReadResult in try fd.read(into: buffer) }
        switch result {
        case .bytes(let n):
            try emit(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            state.withLock {
                let fromInitial = min(UInt64(n), $0.initialBytes)
                $0.initialBytes -= fromInitial
                $0.dirtyBytes -= min(UInt64(n) - fromInitial, $0.dirtyBytes)
                $0.counters.preCopyBytes += UInt64(n)
                $0.counters.chunks += 1
            }
        case .drainedForNow, .endOfStream:
            let fresh = try tuning.preCopyDrained(dataFD: fd)
            state.withLock { $0.absorb(fresh ?? VFIOPrecopyInfo(initialBytes: 0, dirtyBytes: 0)) }
        }
        return state.withLock { s -> Bool in
            guard context.switchoverAckEnabled, !s.initialDataSent, s.initialBytes == 0 else { return false }
            s.initialDataSent = true
            s.counters.initDataSent = true
            return true
        }
    }
}
