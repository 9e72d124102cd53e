import MigrationCore
import MigrationStream
import VFIO

extension VFIOPCIHandler {
    public func loadSetup(context: LoadContext) throws {
        _ = try probeFlags(phase: "load setup")
        let fd = try vfio("load setup: enter RESUMING") { () throws(VFIOError) in try device.setState(.resuming) }
        guard let fd else {
            throw VFIOPCIHandlerError.badSection(device: device.name, offset: 0, reason: "RESUMING opened no data fd")
        }
        let size = tuning.chunkSize(stopCopySize: UInt64(Self.defaultChunkSize))
        state.withLock {
            $0.dataFD = fd
            _ = $0.buffer(atLeast: size)
            $0.configLoadReady = false
            $0.pendingConfig = nil
            $0.configLoaded = false
        }
    }

    /// A device with PRE_COPY sends initial data and waits for its acknowledgement (QEMU:
    /// `vfio_switchover_ack_needed`).
    public func switchoverAckNeeded(context: LoadContext) -> Bool {
        state.withLock { $0.flags.contains(.preCopy) }
    }

    public func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        let idstr = header.binding.idstr
        while true {
            let at = reader.offset
            let tag: VFIOSectionTag
            do { tag = try reader.readVFIOTag(idstr: idstr) } catch let error as StreamError {
                throw VFIOPCIHandlerError.badSection(device: device.name, offset: error.offset, reason: error.description)
            }
            switch tag {
            case .endOfState:
                return
            case .setupState:
                try expectEnd(reader, idstr: idstr, after: "SETUP_STATE")
                return
            case .dataState:
                // Multifd: the stop-copy data comes as packets, never in the END section.
                if context.multifdTransfer, header.kind == .end {
                    throw VFIOPCIHandlerError.badSection(
                        device: device.name, offset: at,
                        reason:
                            "DATA in the END section while multifd transfer is on (x-migration-multifd-transfer differs between the ends?)")
                }
                try loadChunk(from: reader, at: at)
            case .reinit:
                try reinitReceived(context: context, header: header, at: at)
            case .initDataSent:
                guard context.switchoverAckEnabled, state.withLock({ $0.flags.contains(.preCopy) }) else {
                    throw VFIOPCIHandlerError.unexpectedInitDataSent(device: device.name, offset: at)
                }
                try context.approveSwitchover()
                state.withLock { $0.counters.acknowledged = true }
                return
            case .configState:
                if context.multifdTransfer {
                    throw VFIOPCIHandlerError.badSection(
                        device: device.name, offset: at,
                        reason:
                            "CONFIG_STATE on the main channel while multifd transfer is on (x-migration-multifd-transfer differs between the ends?)"
                    )
                }
                let count = config.byteCount
                let bytes = try reader.readBytes(count, "the config state of \(idstr)")
                // QEMU's config vmstate has no length: a wrong size shows as a missing END_OF_STATE.
                guard let next = try reader.peek(8), next == VFIOSectionTag.endOfState.bytes else {
                    throw VFIOPCIHandlerError.configStateMismatch(device: device.name, offset: at, expected: count)
                }
                try loadConfig(bytes)
                try expectEnd(reader, idstr: idstr, after: "CONFIG_STATE")
                return
            case .configLoadReady:
                // QEMU 10.1 with multifd transfer and load-config-after-iter: the FULL section's only
                // tag, no END_OF_STATE; the config state itself is the last multifd buffer, loaded
                // now if it came first (loadStateBuffer keeps it until this tag), else when it comes.
                try configLoadReady(context: context, header: header, at: at)
                return
            }
        }
    }

    /// The source's device has new initial data (REINIT): this device's acknowledgement is
    /// withdrawn until its next INIT_DATA_SENT (``LoadContext/revokeSwitchover()``).
    private func reinitReceived(context: LoadContext, header: SectionHeader, at: Int) throws {
        guard header.kind == .part, context.switchoverAckEnabled, state.withLock({ $0.flags.contains(.preCopy) }) else {
            throw VFIOPCIHandlerError.badSection(
                device: device.name, offset: at,
                reason: header.kind == .part ? "REINIT without switchover-ack or pre-copy" : "REINIT outside a PART section")
        }
        let revoke = state.withLock { s -> Bool in
            guard s.counters.acknowledged else { return false }
            s.counters.acknowledged = false
            s.counters.revocations += 1
            return true
        }
        if revoke { try context.revokeSwitchover() }
    }

    private func configLoadReady(context: LoadContext, header: SectionHeader, at: Int) throws {
        func refuse(_ reason: String) -> VFIOPCIHandlerError { .badSection(device: device.name, offset: at, reason: reason) }
        guard context.multifdTransfer else { throw refuse("CONFIG_LOAD_READY needs multifd transfer, which this migration does not use") }
        guard header.kind == .full else { throw refuse("CONFIG_LOAD_READY outside the FULL section") }
        guard loadConfigAfterIterations else {
            throw refuse(
                "CONFIG_LOAD_READY, but loading the config after the iterations is off here (x-migration-load-config-after-iter differs between the ends?)"
            )
        }
        let (pending, again) = state.withLock { s -> ([UInt8]?, Bool) in
            defer {
                s.configLoadReady = true
                s.pendingConfig = nil
            }
            return (s.pendingConfig, s.configLoadReady)
        }
        guard !again else { throw refuse("a second CONFIG_LOAD_READY") }
        if let pending { try loadConfig(pending) }
    }

    /// Loads a config state and records it (the destination's check at load completion).
    func loadConfig(_ bytes: [UInt8]) throws {
        try config.load(bytes)
        state.withLock { $0.configLoaded = true }
    }

    private func expectEnd(_ reader: StreamReader, idstr: String, after: String) throws {
        let at = reader.offset
        let tag = try reader.readVFIOTag(idstr: idstr)
        guard tag == .endOfState else {
            throw VFIOPCIHandlerError.badSection(device: device.name, offset: at, reason: "\(tag) after \(after), expected END_OF_STATE")
        }
    }

    /// Streams one DATA chunk from the network into the resume fd, a buffer at a time.
    private func loadChunk(from reader: StreamReader, at: Int) throws {
        let size = try reader.readBE64("the size of a VFIO data chunk")
        guard size <= Self.maxIncomingChunk else {
            throw VFIOPCIHandlerError.badSection(
                device: device.name, offset: at,
                reason: "DATA chunk of \(size) bytes exceeds the \(Self.maxIncomingChunk)-byte limit")
        }
        let fd = state.withLock { $0.dataFD }
        guard let fd else {
            throw VFIOPCIHandlerError.badSection(device: device.name, offset: at, reason: "DATA chunk before load setup")
        }
        var left = size
        while left > 0 {
            // The buffer is looked up for every piece and held while in use: observeResumeData
            // may replace the tuning's buffer (mlx5 grows it for a larger STOP_COPY_SIZE), and
            // the reference keeps the one being used alive until the piece is written.
            guard let buffer = state.withLock({ tuning.preferredReceiveBuffer ?? $0.buffer }) else {
                throw VFIOPCIHandlerError.badSection(device: device.name, offset: at, reason: "DATA chunk before load setup")
            }
            let written = try buffer.withBytes(upTo: Int(min(left, UInt64(buffer.count)))) { piece -> Int in
                try reader.readExactly(into: piece, "VFIO device data")
                try tuning.observeResumeData(UnsafeRawBufferPointer(piece))
                try vfio("load: write device data") { () throws(VFIOError) -> Void in try fd.write(UnsafeRawBufferPointer(piece)) }
                return piece.count
            }
            left -= UInt64(written)
        }
        state.withLock {
            $0.counters.loadedBytes += size
            $0.counters.chunks += 1
        }
    }

    public func expectedFinalLoadCostMicros(context: LoadContext) -> UInt64 {
        tuning.expectedFinalLoadCostMicros()
    }

    public func loadBacklog(context: LoadContext) -> LoadBacklog {
        tuning.loadBacklog()
    }

    public func loadComplete(context: LoadContext) throws {
        if context.multifdTransfer, loadConfigAfterIterations {
            let (ready, loaded) = state.withLock { ($0.configLoadReady, $0.configLoaded) }
            guard ready, loaded else {
                throw VFIOPCIHandlerError.badSection(
                    device: device.name, offset: 0,
                    reason: ready
                        ? "CONFIG_LOAD_READY came, but no config state over the channels"
                        : "the config state came over the channels, but no CONFIG_LOAD_READY (x-migration-load-config-after-iter differs between the ends?)"
                )
            }
        }
        releaseSession()
        // RESUMING → STOP is where the kernel checks what it received. The device runs when
        // the guest starts (runStateChanged), after every device has reached RUNNING_P2P.
        try vfio("load complete: leave RESUMING") { () throws(VFIOError) in try device.setState(.stop) }
    }

    public func loadCleanup(succeeded: Bool) {
        releaseSession()
        // A failed incoming migration leaves nothing half-loaded: reset puts the device back
        // to RUNNING with its data fds disabled.
        if !succeeded { try? device.reset() }
    }
}
