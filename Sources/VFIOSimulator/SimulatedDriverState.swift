import SystemPackage
import VFIO

/// Everything a simulated device knows, guarded by its driver's lock.
struct SimulatedDriverState {
    var current: VFIODeviceState = .running
    /// Set by a hung request in pre-fix-kernel mode: the state mutex is never released again.
    var wedged = false
    var failures: [SimulatedVFIOConfiguration.ArcFailure]
    var arcLog: [SimulatedVFIOArc] = []
    /// Every arc and reset, numbered across devices.
    var transitionLog: [SimulatedVFIOTransition] = []

    // Dirty accounting.
    var lastTick: Duration
    var dirtyCarry: UInt64 = 0
    /// mlx5: bytes the firmware would put in the next incremental image.
    var pendingDirty: UInt64 = 0
    /// The PRECOPY_INFOv2 opt-in (feature 12 SET): `flags` are output, REINIT may be reported.
    var precopyInfoV2 = false
    /// The configured REINIT event has happened (once per device).
    var reinitFired = false
    /// Every dirty byte accrued since open or reset (growing MIG_DATA_SIZE estimate).
    var totalDirtied: UInt64 = 0

    // Sessions.
    var nextSessionID: UInt64 = 1
    var save: SimulatedSaveSession?
    var resume: SimulatedResumeSession?

    // Content.
    /// mtty: the port structs (36 bytes each); replaced by a committed load.
    var mttyPorts: [UInt8]
    /// mlx5: the stream number of the next firmware image, so every image has fresh content.
    var nextImageStream: UInt64 = 1

    // Results.
    var lastSavedDigest: VFIOStateDigest?
    var lastLoadedDigest: VFIOStateDigest?
    var loadedBytes: [UInt8]?
    var loadedImageCount = 0

    init(configuration: SimulatedVFIOConfiguration, now: Duration) {
        failures = configuration.failures
        lastTick = now
        if case .mtty(let ports) = configuration.payload {
            mttyPorts = DerivedBytes.bytes(seed: configuration.seed, stream: 0, count: 36 * ports)
        } else {
            mttyPorts = []
        }
    }

    // MARK: Time

    /// Accrues dirty bytes for the time spent in the current state since the last call.
    mutating func tick(configuration: SimulatedVFIOConfiguration, now: Duration) {
        let elapsed = now - lastTick
        lastTick = now
        let rate = configuration.dirtyBytesPerSecond
        guard rate > 0, elapsed > .zero, current == .running || current == .preCopy else { return }
        let (seconds, attoseconds) = elapsed.components
        let nanoseconds = UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
        let product = rate.multipliedFullWidth(by: nanoseconds)
        let (quotient, remainder) = divide(product, adding: dirtyCarry)
        dirtyCarry = remainder
        totalDirtied &+= quotient
        if case .mlx5(let payload) = configuration.payload, current == .preCopy, save != nil {
            pendingDirty = min(payload.imageSize, pendingDirty &+ quotient)
        }
    }

    private func divide(_ product: (high: UInt64, low: UInt64.Magnitude), adding carry: UInt64) -> (UInt64, UInt64) {
        let (low, overflow) = product.low.addingReportingOverflow(carry)
        let high = product.high &+ (overflow ? 1 : 0)
        guard high < 1_000_000_000 else { return (.max, 0) }
        return (1_000_000_000 as UInt64).dividingFullWidth((high: high, low: low))
    }

    // MARK: Lifecycle

    /// VFIO_DEVICE_RESET or device close: RUNNING, every session disabled, dirty accounting restarted.
    mutating func reset(configuration: SimulatedVFIOConfiguration, now: Duration) {
        current = .running
        if let save { lastSavedDigest = save.hasher.finalize() }
        save = nil
        resume = nil
        pendingDirty = 0
        totalDirtied = 0
        dirtyCarry = 0
        lastTick = now
    }

    mutating func enterError() {
        current = .error
        if let save { lastSavedDigest = save.hasher.finalize() }
        save = nil
        resume = nil
    }

    mutating func endSession(_ session: SimulatedSessionRef) {
        if save?.id == session.id {
            lastSavedDigest = save?.hasher.finalize()
            save = nil
        }
        if resume?.id == session.id { resume = nil }
    }

    mutating func takeFailure(from: VFIODeviceState, to: VFIODeviceState) -> SimulatedVFIOConfiguration.ArcFailure? {
        guard let index = failures.firstIndex(where: { $0.from == from && $0.to == to }) else { return nil }
        let failure = failures[index]
        if let times = failure.times {
            if times <= 1 { failures.remove(at: index) } else { failures[index].times = times - 1 }
        }
        return failure
    }

    private mutating func newSessionRef(_ direction: VFIODataDirection) -> SimulatedSessionRef {
        defer { nextSessionID += 1 }
        return SimulatedSessionRef(id: nextSessionID, direction: direction)
    }

    // MARK: Arcs

    /// The driver's work for one base arc. Returns the session a new data fd must serve, if any.
    mutating func performArc(
        from: VFIODeviceState, to: VFIODeviceState, configuration: SimulatedVFIOConfiguration
    ) -> Result<SimulatedSessionRef?, Errno> {
        switch (from, to) {
        case (.running, .preCopy), (.runningP2P, .preCopyP2P):
            let ref = newSessionRef(.save)
            var session = SimulatedSaveSession(ref: ref)
            pendingDirty = 0
            queuePreCopyStart(into: &session, configuration: configuration)
            save = session
            return .success(ref)
        case (.stop, .stopCopy):
            let ref = newSessionRef(.save)
            var session = SimulatedSaveSession(ref: ref)
            queueFullSave(into: &session, configuration: configuration)
            save = session
            return .success(ref)
        case (.preCopy, .stopCopy), (.preCopyP2P, .stopCopy):
            guard var session = save else { return .failure(.invalidArgument) }
            queueFinal(into: &session, configuration: configuration)
            save = session
            return .success(nil)
        case (.stop, .resuming):
            let ref = newSessionRef(.resume)
            resume = SimulatedResumeSession(ref: ref, configuration: configuration)
            return .success(ref)
        case (.resuming, .stop):
            return commitResume(configuration: configuration).map { nil }
        default:
            if VFIOMigrationFSM.arcEndsSession(from: from, to: to), let save {
                lastSavedDigest = save.hasher.finalize()
                self.save = nil
            }
            return .success(nil)
        }
    }

    // MARK: MIG_DATA_SIZE

    func stopCopySize(configuration: SimulatedVFIOConfiguration) -> UInt64 {
        switch configuration.dataSize {
        case .constant(let value): return value
        case .exact: return exactStopCopySize(configuration: configuration)
        case .growingEstimate: return exactStopCopySize(configuration: configuration) &+ totalDirtied
        }
    }

    private func exactStopCopySize(configuration: SimulatedVFIOConfiguration) -> UInt64 {
        if let save {
            return save.buffered + (save.finalQueued ? 0 : finalPartSize(configuration: configuration))
        }
        switch configuration.payload {
        case .mtty(let ports): return 24 + 36 * UInt64(ports)
        case .opaque(let size, _): return size
        case .mlx5(let payload): return MLX5Record.headerSize + payload.imageSize
        }
    }

    /// Bytes the arc into STOP_COPY adds to a pre-copy session.
    func finalPartSize(configuration: SimulatedVFIOConfiguration) -> UInt64 {
        switch configuration.payload {
        case .mtty(let ports): return 36 * UInt64(ports)
        case .opaque(let size, let initialBytes): return size - initialBytes
        case .mlx5(let payload):
            let image = payload.finalImageSize + pendingDirty
            return image + MLX5Record.headerSize * UInt64(MLX5Record.chunkCount(image))
        }
    }
}
