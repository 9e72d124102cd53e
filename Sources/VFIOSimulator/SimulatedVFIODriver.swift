import Synchronization
import SystemPackage
import VFIO

/// The kernel side of a simulated device: the feature ioctl front-end, the state machine driven one
/// arc at a time, and the data sessions. All state sits behind one lock; time comes from the clock.
package final class SimulatedVFIODriver: Sendable {
    let configuration: SimulatedVFIOConfiguration
    let clock: any VFIOSimulationClock
    let state: Mutex<SimulatedDriverState>
    /// The PCI config space behind the config region (SimulatedVFIODriver+Config.swift).
    let configSpace: Mutex<[UInt8]>
    /// The device's DMA log while started (SimulatedVFIODriver+DMA.swift).
    let dmaLog = Mutex<SimulatedDMALog?>(nil)
    /// The container or IOAS/HWPT the device's DMA goes through, once attached.
    let iommu = Mutex<SimulatedIOMMUAttachment?>(nil)

    init(configuration: SimulatedVFIOConfiguration, clock: any VFIOSimulationClock) {
        (self.configuration, self.clock) = (configuration, clock)
        self.configSpace = Mutex(configuration.pciConfigSpace)
        self.state = Mutex(SimulatedDriverState(configuration: configuration, now: clock.now()))
    }

    private var flags: VFIOMigrationFlags? { configuration.migration }

    /// The current state, read without an ioctl.
    package var currentState: VFIODeviceState { state.withLock { $0.current } }

    /// Every single arc completed so far.
    package var recordedArcs: [SimulatedVFIOArc] { state.withLock { $0.arcLog } }

    // MARK: Device fd

    /// `ioctl(2)` on the device fd.
    func deviceIoctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        if state.withLock({ $0.wedged }) { return hang() }
        switch request {
        case VFIOUAPI.deviceFeature:
            guard case .buffer(let buffer) = argument else { return .failure(.badAddress) }
            return feature(buffer)
        case VFIOUAPI.deviceGetRegionInfo:
            guard case .buffer(let buffer) = argument else { return .failure(.badAddress) }
            return regionInfo(buffer)
        case VFIOUAPI.deviceReset:
            resetRecording()
            return .success(0)
        case VFIOUAPI.deviceGetInfo:
            // A PCI device with reset: 9 regions (BARs, ROM, config, VGA) and 5 IRQ types.
            guard case .buffer(let buffer) = argument else { return .failure(.badAddress) }
            guard let info = VFIODeviceInfo(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
            guard info.argsz >= 16 else { return .failure(.invalidArgument) }
            let reply = VFIODeviceInfo(argsz: info.argsz, flags: 0b11, numRegions: 9, numIRQs: 5).bytes
            for (index, byte) in reply.enumerated() where index < min(buffer.count, Int(info.argsz)) { buffer[index] = byte }
            return .success(0)
        default:
            return .failure(.inappropriateIOCTLForDevice)
        }
    }

    /// The device fd was closed: data fds die and the next open starts at RUNNING.
    func deviceReleased() {
        // Closing the device ends its DMA log, as the drivers' close_device does (mlx5, pds).
        dmaLog.withLock { $0 = nil }
        resetRecording()
    }

    /// Reset, recorded as a transition.
    private func resetRecording() {
        state.withLock { state in
            state.transitionLog.append(
                SimulatedVFIOTransition(
                    sequence: SimulatedVFIOSequence.next(), device: configuration.name, from: state.current, to: .running, isReset: true))
            state.reset(configuration: configuration, now: clock.now())
        }
    }

    /// A request that never returns in a pre-fix kernel: modelled as `hangTimeout` spent, then ETIMEDOUT.
    private func hang() -> Result<Int32, Errno> {
        clock.sleep(for: configuration.hangTimeout)
        return .failure(.timedOut)
    }

    /// `VFIO_DEVICE_FEATURE`: header checks, then per-feature permission and size checks (reference §1.2).
    private func feature(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Int32, Errno> {
        guard let header = VFIODeviceFeatureHeader(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
        let operationBits = VFIOUAPI.featureGet | VFIOUAPI.featureSet | VFIOUAPI.featureProbe
        guard header.argsz >= UInt32(VFIODeviceFeatureHeader.size),
            header.flags & ~(VFIOUAPI.featureMask | operationBits) == 0
        else { return .failure(.invalidArgument) }
        let get = header.flags & VFIOUAPI.featureGet != 0
        let set = header.flags & VFIOUAPI.featureSet != 0
        let probe = header.flags & VFIOUAPI.featureProbe != 0
        if get, set, !probe { return .failure(.invalidArgument) }

        let index = header.flags & VFIOUAPI.featureMask
        guard let feature = VFIOFeature(rawValue: index) else { return .failure(.inappropriateIOCTLForDevice) }
        if [.dmaLoggingStart, .dmaLoggingStop, .dmaLoggingReport].contains(feature) {
            return dmaLogging(feature, header: header, get: get, set: set, probe: probe, buffer: buffer)
        }
        if feature == .migPrecopyInfoV2 {
            // SET only, no payload (any given is ignored); ENOTTY where the kernel lacks it or the
            // device has no PRE_COPY.
            guard configuration.precopyInfoV2, flags?.contains(.preCopy) == true else { return .failure(.inappropriateIOCTLForDevice) }
            if get || (!set && !probe) { return .failure(.invalidArgument) }
            if probe { return .success(0) }
            state.withLock { $0.precopyInfoV2 = true }
            return .success(0)
        }
        guard [.migration, .migDeviceState, .migDataSize].contains(feature) else { return .failure(.inappropriateIOCTLForDevice) }
        guard flags != nil else { return .failure(.inappropriateIOCTLForDevice) }

        let allowsGet = true
        let allowsSet = feature == .migDeviceState
        if (get && !allowsGet) || (set && !allowsSet) { return .failure(.invalidArgument) }
        if probe { return .success(0) }
        if !get && !set { return .failure(.invalidArgument) }
        let payloadSize = 8
        guard Int(header.argsz) - VFIODeviceFeatureHeader.size >= payloadSize else { return .failure(.invalidArgument) }
        guard buffer.count >= VFIODeviceFeatureHeader.size + payloadSize else { return .failure(.badAddress) }
        let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[VFIODeviceFeatureHeader.size...])

        switch feature {
        case .migration:
            store(flags?.rawValue ?? 0, into: payload)
            return .success(0)
        case .migDataSize:
            let size = state.withLock { state in
                state.tick(configuration: configuration, now: clock.now())
                return state.stopCopySize(configuration: configuration)
            }
            store(size, into: payload)
            return .success(0)
        case .migDeviceState where get:
            let current = state.withLock { state in
                state.tick(configuration: configuration, now: clock.now())
                return state.current
            }
            store(VFIOMigDeviceStatePayload(deviceState: current.rawValue, dataFD: -1).bytes, into: payload)
            return .success(0)
        default:
            let raw = LittleEndianBytes.load(UInt32.self, from: UnsafeRawBufferPointer(payload), at: 0)
            let result = setState(raw)
            // The payload goes back either way: the requested state, and the new fd or -1.
            let fd: Int32 = if case .success(let fd) = result { fd } else { -1 }
            store(VFIOMigDeviceStatePayload(deviceState: raw, dataFD: fd).bytes, into: payload)
            return result.map { _ in 0 }
        }
    }

    private func store(_ value: UInt64, into payload: UnsafeMutableRawBufferPointer) {
        var bytes: [UInt8] = []
        LittleEndianBytes.append(value, to: &bytes)
        store(bytes, into: payload)
    }

    func store(_ bytes: [UInt8], into payload: UnsafeMutableRawBufferPointer) {
        for (index, byte) in bytes.enumerated() where index < payload.count { payload[index] = byte }
    }

    // MARK: State machine

    private enum SetOutcome {
        case done(newSession: SimulatedSessionRef?)
        case failed(Errno)
        case hang
    }

    /// A SET of `MIG_DEVICE_STATE`: walks the next-step table one arc at a time. Returns the new data
    /// fd (or -1) on success.
    private func setState(_ raw: UInt32) -> Result<Int32, Errno> {
        let outcome = state.withLock { state -> SetOutcome in
            state.tick(configuration: configuration, now: clock.now())
            if state.current == .error {
                return .failed(configuration.errorStyle == .pds ? .ioError : .invalidArgument)
            }
            guard let flags, let requested = VFIODeviceState(rawValue: raw), requested != .error,
                requested.isSupported(by: flags)
            else { return .failed(.invalidArgument) }
            if configuration.preFixKernel, VFIOMigrationFSM.isKernelHangRequest(from: state.current, to: requested) {
                state.wedged = true
                return .hang
            }
            guard let path = VFIOMigrationFSM.path(from: state.current, to: requested, flags: flags) else {
                return .failed(.invalidArgument)
            }
            var session: SimulatedSessionRef?
            for step in path {
                if let failure = state.takeFailure(from: state.current, to: step) {
                    if failure.entersError { state.enterError() }
                    return .failed(failure.errno)
                }
                switch state.performArc(from: state.current, to: step, configuration: configuration) {
                case .success(let opened): session = opened ?? session
                case .failure(let errno): return .failed(errno)
                }
                state.arcLog.append(SimulatedVFIOArc(state.current, step))
                state.transitionLog.append(
                    SimulatedVFIOTransition(
                        sequence: SimulatedVFIOSequence.next(), device: configuration.name, from: state.current, to: step))
                state.current = step
            }
            return .done(newSession: session)
        }
        switch outcome {
        case .hang:
            return hang()
        case .failed(let errno):
            return .failure(errno)
        case .done(nil):
            return .success(-1)
        case .done(let session?):
            let file = SimulatedDataFile(driver: self, session: session)
            // As the kernel's anon-inode files: save fds O_RDONLY, resume fds O_WRONLY.
            switch SimulatedFileTable.shared.open(file, writeOnly: session.direction == .resume) {
            case .success(let fd): return .success(fd)
            case .failure(let errno):
                // The kernel cannot install the fd: the session is unusable.
                state.withLock { $0.endSession(session) }
                return .failure(errno)
            }
        }
    }

    // MARK: Data fds

    func read(_ session: SimulatedSessionRef, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        guard session.direction == .save else { return .failure(.badFileDescriptor) }
        let result = state.withLock { state in
            state.tick(configuration: configuration, now: clock.now())
            return state.read(session, into: buffer, configuration: configuration)
        }
        // The device's save speed, outside the device lock (as the load cost of write).
        if configuration.readTimePerMiB > .zero, case .success(let n) = result, n > 0 {
            clock.sleep(for: configuration.readTimePerMiB * (Double(n) / Double(1 << 20)))
        }
        return result
    }

    func write(_ session: SimulatedSessionRef, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        guard session.direction == .resume else { return .failure(.badFileDescriptor) }
        let (result, cost) = state.withLock { state in
            state.tick(configuration: configuration, now: clock.now())
            return state.write(session, from: buffer, configuration: configuration)
        }
        // The load happens inside write(2), outside the device lock (mlx5 holds only the file's lock).
        if cost > .zero { clock.sleep(for: cost) }
        return result
    }

    func dataIoctl(_ session: SimulatedSessionRef, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        guard request == VFIOUAPI.migGetPrecopyInfo, session.direction == .save else {
            return .failure(.inappropriateIOCTLForDevice)
        }
        guard case .buffer(let buffer) = argument, buffer.count >= VFIOPrecopyInfoLayout.size,
            var info = VFIOPrecopyInfoLayout(bytes: UnsafeRawBufferPointer(buffer))
        else { return .failure(.badAddress) }
        guard info.argsz >= UInt32(VFIOPrecopyInfoLayout.size) else { return .failure(.invalidArgument) }
        if state.withLock({ $0.wedged }) { return hang() }
        let answer = state.withLock { state in
            state.tick(configuration: configuration, now: clock.now())
            return state.precopyInfo(session, configuration: configuration)
        }
        switch answer {
        case .failure(let errno):
            return .failure(errno)
        case .success(let (initial, dirty, reinit)):
            // v1 drivers leave `flags` as the caller passed it; after the v2 opt-in they are output.
            info.initialBytes = initial
            info.dirtyBytes = dirty
            if state.withLock({ $0.precopyInfoV2 }) { info.flags = reinit ? VFIOUAPI.precopyInfoReinit : 0 }
            for (index, byte) in info.bytes.enumerated() { buffer[index] = byte }
            return .success(0)
        }
    }
}
