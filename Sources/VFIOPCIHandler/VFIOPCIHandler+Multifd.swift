import MigrationCore
import MigrationStream
import VFIO

// Multifd device-state transfer (QEMU 10.0 hw/vfio/migration-multifd.c, reference §6).
//
// Source: `saveCompleteMultifd` runs on a thread of its own: the device is in STOP_COPY (it
// entered it when the guest stopped, behind the P2P barrier), each
// read of the save fd becomes one buffer, and the last buffer (CONFIG_STATE flag) carries
// exactly the classic FULL body: CONFIG_STATE, the config state, END_OF_STATE. Meanwhile the
// END and FULL bodies on the main channel are a lone END_OF_STATE.
//
// Destination: the engine feeds `loadStateBuffer` in index order on the device's load thread;
// data buffers go to the resume fd, the config buffer is parsed and loaded last — with
// load-config-after-iter (QEMU 10.1), not before the FULL section's CONFIG_LOAD_READY.

extension VFIOPCIHandler {
    /// Both the stop-copy data and (Switchover peers) the pre-copy data.
    public var multifdSupport: MultifdSupport { [.stopCopy, .precopy] }

    public func saveCompleteMultifd(to sender: DeviceStateSender, context: SaveContext) throws {
        try drainStopCopy(phase: "save complete (multifd)", offset: 0) { try sender.send($0, isConfigState: false) }
        let body = VFIOSectionTag.configState.bytes + (try config.save()) + VFIOSectionTag.endOfState.bytes
        try body.withUnsafeBytes { try sender.send($0, isConfigState: true) }
    }

    public func loadStateBuffer(_ buffer: UnsafeRawBufferPointer, index: UInt32, isConfigState: Bool, context: LoadContext) throws {
        if isConfigState {
            try loadMultifdConfig(buffer, index: index)
            return
        }
        if buffer.isEmpty {
            // Pre-copy over the channels: the empty buffer marks the initial data as sent
            // (INIT_DATA_SENT); every buffer before it is loaded now.
            guard context.switchoverAckEnabled, state.withLock({ $0.flags.contains(.preCopy) && !$0.counters.acknowledged }) else { return }
            try context.approveSwitchover()
            state.withLock { $0.counters.acknowledged = true }
            return
        }
        let fd = state.withLock { $0.dataFD }
        guard let fd else {
            throw VFIOPCIHandlerError.badSection(device: device.name, offset: 0, reason: "multifd buffer \(index) before load setup")
        }
        try tuning.observeResumeData(buffer)
        try vfio("load (multifd): write device data") { () throws(VFIOError) -> Void in try fd.write(buffer) }
        state.withLock {
            $0.counters.loadedBytes += UInt64(buffer.count)
            $0.counters.chunks += 1
        }
    }

    /// The config buffer: CONFIG_STATE, exactly ``VFIOPCIConfigState/byteCount`` bytes, END_OF_STATE.
    private func loadMultifdConfig(_ buffer: UnsafeRawBufferPointer, index: UInt32) throws {
        let count = config.byteCount
        let bytes = Array(buffer)
        func refuse(_ reason: String) -> VFIOPCIHandlerError {
            .badSection(device: device.name, offset: 0, reason: "multifd config buffer \(index): \(reason)")
        }
        guard bytes.count >= 16, Array(bytes[0..<8]) == VFIOSectionTag.configState.bytes else {
            throw refuse("it must start with CONFIG_STATE")
        }
        guard bytes.count == 16 + count, Array(bytes[(8 + count)...]) == VFIOSectionTag.endOfState.bytes else {
            throw VFIOPCIHandlerError.configStateMismatch(device: device.name, offset: 8, expected: count)
        }
        let body = Array(bytes[8..<(8 + count)])
        // Load-config-after-iter: until the FULL section's CONFIG_LOAD_READY, the validated
        // state waits (QEMU's load thread waits for it the same way, at the same point).
        if loadConfigAfterIterations {
            let wait = try state.withLock { s -> Bool in
                guard s.pendingConfig == nil, !s.configLoaded else { throw refuse("a second config state") }
                if !s.configLoadReady { s.pendingConfig = body }
                return !s.configLoadReady
            }
            if wait { return }
        }
        try loadConfig(body)
    }
}

// Pre-copy over the channels (MigrationParameters.multifdPrecopy, beyond QEMU 10.0): each call
// reads at most one buffer in PRE_COPY and sends it as a packet; once the initial bytes are
// all read and switchover-ack is on, an empty buffer tells the destination to approve (the
// INIT_DATA_SENT of the classic PART section). Switchover peers only.
extension VFIOPCIHandler {
    public func saveIterateMultifd(to sender: DeviceStateSender, budget: Int, context: SaveContext) throws -> IterationResult {
        let (fd, buffer) = state.withLock { ($0.inPreCopy ? $0.dataFD : nil, $0.buffer) }
        guard let fd, let buffer else { return .done }
        let marker = try buffer.withBytes(upTo: max(budget, 4096)) { piece in
            try preCopyStep(fd: fd, buffer: piece, phase: "save iterate (multifd): read", context: context) {
                try sender.send($0, isConfigState: false)
            }
        }
        if marker { try sender.send(UnsafeRawBufferPointer(start: nil, count: 0), isConfigState: false) }
        return state.withLock { $0.initialBytes == 0 && $0.dirtyBytes == 0 } ? .done : .more
    }
}
