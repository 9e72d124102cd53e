import Synchronization
import SystemPackage

/// The migration uAPI client both device types share: it encodes `VFIO_DEVICE_FEATURE` requests,
/// validates state requests, and interprets the kernel's answers. It owns the device fd, unless
/// it was lent one.
package final class VFIODeviceClient: Sendable {
    package let name: String
    package let system: any VFIOSyscalls
    let stateCache = VFIODeviceStateCache()

    private struct Probe {
        var done = false
        var flags: VFIOMigrationFlags?
        /// ENOTTY or EINVAL, when that is how the kernel said there is no migration.
        var unsupportedErrno: Errno?
    }

    /// Held across each device ioctl sequence, so a SET and its follow-up GET are not interleaved
    /// with another thread's requests.
    private let device: Mutex<Int32?>
    private let probe = Mutex(Probe())

    /// Maximum attempts of a SET interrupted (EINTR) before any step was taken.
    private static let maxInterruptedSets = 16

    /// Whether `close()` and deinit close the device fd (false for a fd the VMM lent us).
    private let ownsDeviceFD: Bool

    package init(deviceFD: Int32, name: String, system: any VFIOSyscalls, ownsDeviceFD: Bool = true) {
        (self.name, self.system) = (name, system)
        self.device = Mutex(deviceFD)
        self.ownsDeviceFD = ownsDeviceFD
    }

    deinit {
        if ownsDeviceFD, let fd = device.withLock({ $0 }) { _ = system.close(fd) }
    }

    /// The device fd, or nil once closed.
    package var deviceFD: Int32? { device.withLock { $0 } }

    /// Closes the device fd (`close(2)`); the kernel then disables every data fd of the device.
    /// A borrowed fd is only forgotten: its owner closes it.
    package func close() throws(VFIOError) {
        let fd = device.withLock { fd -> Int32? in
            defer { fd = nil }
            return fd
        }
        guard let fd, ownsDeviceFD else { return }
        if case .failure(let errno) = system.close(fd), errno != .interrupted {
            throw VFIOError.syscallFailed(operation: .close, device: name, errno: errno)
        }
    }

    /// `VFIO_DEVICE_GET_INFO`: what every VFIO device fd answers (EINVAL from a cdev not yet
    /// bound to an iommufd, ENOTTY from a fd that is no VFIO device).
    package func deviceInfo() throws(VFIOError) -> VFIODeviceInfo {
        try withDevice(.getInfo) { (fd) throws(VFIOError) -> VFIODeviceInfo in
            var info = VFIODeviceInfo()
            if case .failure(let errno) = system.ioctlRestarting(fd, VFIOUAPI.deviceGetInfo, layout: &info) {
                throw VFIOError.syscallFailed(operation: .getInfo, device: name, errno: errno)
            }
            return info
        }
    }

    /// Lets go of the device fd without closing it (an adoption that failed: the fd is the caller's).
    package func forget() { device.withLock { $0 = nil } }

    func withDevice<T>(_ operation: VFIOOperation, _ body: (Int32) throws(VFIOError) -> T) throws(VFIOError) -> T {
        try device.withLock { (fd: inout Int32?) throws(VFIOError) -> T in
            guard let fd else { throw VFIOError.syscallFailed(operation: operation, device: name, errno: .badFileDescriptor) }
            return try body(fd)
        }
    }

    /// `VFIO_DEVICE_FEATURE` with `payload` after the header; returns the payload as the kernel left
    /// it. EINTR is retried when `retryInterrupted`.
    func feature(
        _ fd: Int32, _ feature: VFIOFeature, _ operation: UInt32, payload: [UInt8], retryInterrupted: Bool = true
    ) -> Result<[UInt8], Errno> {
        while true {
            var bytes = VFIODeviceFeatureHeader.request(feature, operation, payload: payload)
            let result = bytes.withUnsafeMutableBytes { system.ioctl(fd, VFIOUAPI.deviceFeature, .buffer($0)) }
            switch result {
            case .success: return .success(Array(bytes[VFIODeviceFeatureHeader.size...]))
            case .failure(.interrupted) where retryInterrupted: continue
            case .failure(let errno): return .failure(errno)
            }
        }
    }

    // MARK: Probe

    package func migrationFlags() throws(VFIOError) -> VFIOMigrationFlags? {
        if let cached = probe.withLock({ $0.done ? Optional($0.flags) : nil }) { return cached }
        var unsupportedErrno: Errno?
        let flags = try withDevice(.probeMigration) { (fd) throws(VFIOError) -> VFIOMigrationFlags? in
            switch feature(fd, .migration, VFIOUAPI.featureGet, payload: [UInt8](repeating: 0, count: 8)) {
            case .success(let payload):
                return VFIOMigrationFlags(rawValue: LittleEndianBytes.load(UInt64.self, from: payload, at: 0))
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice || errno == .invalidArgument:
                unsupportedErrno = errno
                return nil
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .probeMigration, device: name, errno: errno)
            }
        }
        probe.withLock { $0 = Probe(done: true, flags: flags, unsupportedErrno: unsupportedErrno) }
        return flags
    }

    /// ``migrationFlags()`` with the errno that meant "unsupported" (cached with it).
    package func migrationSupport() throws(VFIOError) -> VFIOMigrationSupport {
        if let flags = try migrationFlags() { return .supported(flags) }
        return .unsupported(probe.withLock { $0.unsupportedErrno } ?? .inappropriateIOCTLForDevice)
    }

    // MARK: State

    private func getState(_ fd: Int32) throws(VFIOError) -> VFIODeviceState {
        let request = VFIOMigDeviceStatePayload(deviceState: 0, dataFD: -1).bytes
        switch feature(fd, .migDeviceState, VFIOUAPI.featureGet, payload: request) {
        case .success(let payload):
            guard let reply = VFIOMigDeviceStatePayload(bytes: payload), let state = VFIODeviceState(rawValue: reply.deviceState) else {
                throw VFIOError.unexpectedReply(operation: .getState, device: name, detail: "unknown state value in \(payload)")
            }
            stateCache.value = state
            return state
        case .failure(let errno):
            throw VFIOError.syscallFailed(operation: .getState, device: name, errno: errno)
        }
    }

    package func deviceState() throws(VFIOError) -> VFIODeviceState {
        try withDevice(.getState) { (fd) throws(VFIOError) in try getState(fd) }
    }

    package func setState(_ requested: VFIODeviceState) throws(VFIOError) -> VFIOMigrationDataFD? {
        guard let flags = try migrationFlags() else { throw VFIOError.migrationUnsupported(device: name) }
        guard requested != .error, requested.isSupported(by: flags) else {
            throw VFIOError.unsupportedState(device: name, requested: requested, flags: flags)
        }
        return try withDevice(.setState) { (fd) throws(VFIOError) -> VFIOMigrationDataFD? in
            var interrupted = 0
            while true {
                // STOP_COPY→PRE_COPY(_P2P) hangs kernels without the FSM fix: check the real state first.
                if requested.isPreCopy {
                    let current = try getState(fd)
                    if VFIOMigrationFSM.isKernelHangRequest(from: current, to: requested) {
                        throw VFIOError.forbiddenTransition(device: name, from: current, to: requested)
                    }
                }
                let payload = VFIOMigDeviceStatePayload(deviceState: requested.rawValue, dataFD: -1).bytes
                switch feature(fd, .migDeviceState, VFIOUAPI.featureSet, payload: payload, retryInterrupted: false) {
                case .success(let reply):
                    stateCache.value = requested
                    let dataFD = VFIOMigDeviceStatePayload(bytes: reply)?.dataFD ?? -1
                    guard dataFD >= 0 else { return nil }
                    return VFIOMigrationDataFD(
                        fd: dataFD, direction: requested == .resuming ? .resume : .save,
                        deviceName: name, system: system, stateCache: stateCache)
                case .failure(let errno):
                    // The reply echoes the requested state: ask the device where it really is.
                    let actual = try? getState(fd)
                    if errno == .interrupted, let actual, actual != requested, interrupted < Self.maxInterruptedSets {
                        // Interrupted before reaching the target: the path from here is the rest of the same path.
                        interrupted += 1
                        continue
                    }
                    if actual == nil { stateCache.value = nil }
                    throw VFIOError.setStateFailed(device: name, requested: requested, errno: errno, actual: actual)
                }
            }
        }
    }

    package func stopCopySize() throws(VFIOError) -> UInt64 {
        try withDevice(.stopCopySize) { (fd) throws(VFIOError) -> UInt64 in
            switch feature(fd, .migDataSize, VFIOUAPI.featureGet, payload: [UInt8](repeating: 0, count: 8)) {
            case .success(let payload):
                return LittleEndianBytes.load(UInt64.self, from: payload, at: 0)
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice || errno == .invalidArgument:
                throw VFIOError.featureUnsupported(operation: .stopCopySize, device: name, errno: errno)
            case .failure(let errno):
                throw VFIOError.syscallFailed(operation: .stopCopySize, device: name, errno: errno)
            }
        }
    }

    package func enablePrecopyInfoV2() throws(VFIOError) -> Bool {
        try withDevice(.precopyInfoV2) { (fd) throws(VFIOError) -> Bool in
            switch feature(fd, .migPrecopyInfoV2, VFIOUAPI.featureSet, payload: []) {
            case .success: return true
            case .failure(let errno) where errno == .inappropriateIOCTLForDevice || errno == .invalidArgument: return false
            case .failure(let errno): throw VFIOError.syscallFailed(operation: .precopyInfoV2, device: name, errno: errno)
            }
        }
    }

    package func reset() throws(VFIOError) {
        try withDevice(.reset) { (fd) throws(VFIOError) in
            while true {
                switch system.ioctl(fd, VFIOUAPI.deviceReset, .none) {
                case .success:
                    stateCache.value = .running
                    return
                case .failure(.interrupted):
                    continue
                case .failure(let errno):
                    stateCache.value = nil
                    throw VFIOError.syscallFailed(operation: .reset, device: name, errno: errno)
                }
            }
        }
    }
}
