// A thin Glibc wrapper over one VFIO device opened through the group/container path
// (Debian's 6.12 has no iommufd). Every call returns the kernel's answer as it is, errno included,
// so the checks can compare it with what the reference and the simulator claim.

#if os(Linux)
import Glibc

/// A failed system call: its errno and what was being done.
struct SysError: Error, Equatable, CustomStringConvertible {
    let code: Int32
    let call: String

    init(_ call: String, code: Int32 = errno) {
        self.call = call
        self.code = code
    }

    var description: String { "\(call): \(errnoName(code))" }
}

/// The symbolic name of the errno values this check meets, with the number for the rest.
func errnoName(_ code: Int32) -> String {
    switch code {
    case EPERM: "EPERM"
    case ENOENT: "ENOENT"
    case EIO: "EIO"
    case EBADF: "EBADF"
    case EAGAIN: "EAGAIN"
    case ENOMEM: "ENOMEM"
    case EFAULT: "EFAULT"
    case EBUSY: "EBUSY"
    case ENODEV: "ENODEV"
    case EINVAL: "EINVAL"
    case ENOTTY: "ENOTTY"
    case ESPIPE: "ESPIPE"
    case E2BIG: "E2BIG"
    case ENOMSG: "ENOMSG"
    case EOPNOTSUPP: "EOPNOTSUPP"
    default: "errno \(code)"
    }
}

/// The outcome of a call that may fail: nil errno means success.
struct CallResult: Equatable, CustomStringConvertible {
    var errno: Int32?
    var ok: Bool { errno == nil }
    var description: String { errno.map(errnoName) ?? "ok" }
    static let success = CallResult(errno: nil)
    static func failure(_ code: Int32) -> CallResult { CallResult(errno: code) }
}

/// What VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE (SET) answered: the return code and the payload the kernel
/// copied back (on failure it holds the requested state and data_fd -1).
struct SetStateResult: CustomStringConvertible {
    var result: CallResult
    var echoedState: UInt32
    var dataFD: Int32

    var description: String { "\(result), echoed state \(echoedState), data_fd \(dataFD)" }
}

/// `struct vfio_precopy_info` as the kernel returned it.
struct PrecopyInfo: Equatable, CustomStringConvertible {
    var argsz: UInt32
    var flags: UInt32
    var initialBytes: UInt64
    var dirtyBytes: UInt64
    var description: String { "initial \(initialBytes), dirty \(dirtyBytes), flags \(hex(UInt64(flags)))" }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

// MARK: - Little-endian byte helpers

extension Array where Element == UInt8 {
    mutating func putLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    func getLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}

// MARK: - The device

/// One mdev opened through /dev/vfio/vfio + /dev/vfio/<group>. Owns its three fds.
final class KernelVFIODevice {
    let name: String
    let group: Int
    let containerFD: Int32
    let groupFD: Int32
    let deviceFD: Int32
    /// VFIO_GROUP_GET_STATUS flags before the container was set (emulated mdev groups may report 0).
    let groupStatusFlags: UInt32
    /// The IOMMU type VFIO_SET_IOMMU accepted.
    let iommuType: Int32

    init(name: String, group: Int) throws(SysError) {
        self.name = name
        self.group = group
        let container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC)
        guard container >= 0 else { throw SysError("open /dev/vfio/vfio") }
        let groupFD = open("/dev/vfio/\(group)", O_RDWR | O_CLOEXEC)
        guard groupFD >= 0 else {
            let error = SysError("open /dev/vfio/\(group)")
            close(container)
            throw error
        }
        func fail(_ call: String) -> SysError {
            let error = SysError(call)
            close(groupFD)
            close(container)
            return error
        }
        // struct vfio_group_status { u32 argsz; u32 flags; }
        var status: [UInt8] = Array(repeating: 0, count: 8)
        status.putLE(UInt32(8), at: 0)
        guard status.withUnsafeMutableBytes({ ioctl(groupFD, VFIORequest.groupGetStatus, $0.baseAddress!) }) == 0 else {
            throw fail("VFIO_GROUP_GET_STATUS")
        }
        var containerArg = container
        guard ioctl(groupFD, VFIORequest.groupSetContainer, &containerArg) == 0 else {
            throw fail("VFIO_GROUP_SET_CONTAINER")
        }
        var chosen = VFIOIOMMUType.type1v2
        if ioctl(container, VFIORequest.setIOMMU, chosen) != 0 {
            chosen = VFIOIOMMUType.type1
            guard ioctl(container, VFIORequest.setIOMMU, chosen) == 0 else { throw fail("VFIO_SET_IOMMU") }
        }
        let device = name.withCString { ioctl(groupFD, VFIORequest.groupGetDeviceFD, UnsafeMutableRawPointer(mutating: $0)) }
        guard device >= 0 else { throw fail("VFIO_GROUP_GET_DEVICE_FD(\(name))") }
        self.containerFD = container
        self.groupFD = groupFD
        self.deviceFD = device
        self.groupStatusFlags = status.getLE(UInt32.self, at: 4)
        self.iommuType = chosen
    }

    deinit {
        close(deviceFD)
        close(groupFD)
        close(containerFD)
    }

    // MARK: Container

    func apiVersion() -> Int32 { ioctl(containerFD, VFIORequest.getAPIVersion) }

    func checkExtension(_ type: Int32) -> Int32 { ioctl(containerFD, VFIORequest.checkExtension, type) }

    // MARK: VFIO_DEVICE_FEATURE

    /// Sends a feature request with `payload` after the 8-byte header; `argsz` defaults to header + payload.
    /// Returns the call's result and the payload as the kernel left it.
    func feature(flags: UInt32, payload: [UInt8] = [], argsz: UInt32? = nil) -> (CallResult, [UInt8]) {
        var buffer: [UInt8] = Array(repeating: 0, count: VFIOFeature.headerSize + payload.count)
        buffer.putLE(argsz ?? UInt32(buffer.count), at: 0)
        buffer.putLE(flags, at: 4)
        buffer.replaceSubrange(VFIOFeature.headerSize..., with: payload)
        let rc = buffer.withUnsafeMutableBytes { ioctl(deviceFD, VFIORequest.deviceFeature, $0.baseAddress!) }
        let result: CallResult = rc == 0 ? .success : .failure(errno)
        return (result, Array(buffer[VFIOFeature.headerSize...]))
    }

    /// GET of a feature whose payload is one u64 (MIGRATION, MIG_DATA_SIZE).
    func getU64Feature(_ index: UInt32) throws(SysError) -> UInt64 {
        let (result, payload) = feature(flags: VFIOFeature.get | index, payload: Array(repeating: 0, count: 8))
        if let code = result.errno { throw SysError("GET feature \(index)", code: code) }
        return payload.getLE(UInt64.self, at: 0)
    }

    func migrationFlags() throws(SysError) -> UInt64 { try getU64Feature(VFIOFeature.migration) }

    func migDataSize() throws(SysError) -> UInt64 { try getU64Feature(VFIOFeature.migDataSize) }

    /// GET MIG_DEVICE_STATE: the raw state and the data_fd field (always -1 on GET).
    func getStateRaw() throws(SysError) -> (state: UInt32, dataFD: Int32) {
        var payload: [UInt8] = Array(repeating: 0, count: 8)
        payload.putLE(Int32(-7), at: 4)
        let (result, out) = feature(flags: VFIOFeature.get | VFIOFeature.migDeviceState, payload: payload)
        if let code = result.errno { throw SysError("GET MIG_DEVICE_STATE", code: code) }
        return (out.getLE(UInt32.self, at: 0), out.getLE(Int32.self, at: 4))
    }

    func state() throws(SysError) -> MigState {
        let raw = try getStateRaw().state
        guard let state = MigState(rawValue: raw) else { throw SysError("GET MIG_DEVICE_STATE (state \(raw))", code: EINVAL) }
        return state
    }

    /// SET MIG_DEVICE_STATE with any raw value (so invalid requests can be sent too).
    func setState(raw: UInt32) -> SetStateResult {
        var payload: [UInt8] = Array(repeating: 0, count: 8)
        payload.putLE(raw, at: 0)
        payload.putLE(Int32(-7), at: 4)
        let (result, out) = feature(flags: VFIOFeature.set | VFIOFeature.migDeviceState, payload: payload)
        return SetStateResult(result: result, echoedState: out.getLE(UInt32.self, at: 0), dataFD: out.getLE(Int32.self, at: 4))
    }

    func setState(_ state: MigState) -> SetStateResult { setState(raw: state.rawValue) }

    /// VFIO_DEVICE_RESET: back to RUNNING, every data fd disabled.
    func reset() -> CallResult {
        ioctl(deviceFD, VFIORequest.deviceReset) == 0 ? .success : .failure(errno)
    }

    // MARK: Regions (to change the device's state before migrating it)

    /// VFIO_DEVICE_GET_REGION_INFO: (size, offset) of a region.
    func regionInfo(_ index: UInt32) throws(SysError) -> (size: UInt64, offset: UInt64) {
        var info: [UInt8] = Array(repeating: 0, count: VFIORegion.infoSize)
        info.putLE(UInt32(VFIORegion.infoSize), at: 0)
        info.putLE(index, at: 8)
        guard info.withUnsafeMutableBytes({ ioctl(deviceFD, VFIORequest.deviceGetRegionInfo, $0.baseAddress!) }) == 0 else {
            throw SysError("VFIO_DEVICE_GET_REGION_INFO(\(index))")
        }
        return (info.getLE(UInt64.self, at: 16), info.getLE(UInt64.self, at: 24))
    }

    /// Writes one byte into a region, as a guest's port I/O would.
    func writeRegionByte(_ index: UInt32, offset: UInt64, value: UInt8) throws(SysError) {
        let base = try regionInfo(index).offset
        var byte = value
        guard pwrite(deviceFD, &byte, 1, off_t(Int64(bitPattern: base + offset))) == 1 else {
            throw SysError("pwrite region \(index) +\(offset)")
        }
    }
}

// MARK: - Migration data fd

/// A migration data fd (save or resume) handed out by a SET; closed on deinit.
final class DataFD {
    let fd: Int32

    init(_ fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// One read(2) of at most `max` bytes.
    func read(max: Int) -> Result<[UInt8], SysError> {
        var buffer: [UInt8] = Array(repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, max) }
        guard n >= 0 else { return .failure(SysError("read")) }
        return .success(Array(buffer[..<n]))
    }

    /// Reads in `chunk`-sized pieces until read returns 0; returns the bytes and each read's size.
    func drain(chunk: Int = 4096, limit: Int = 1 << 20) -> Result<(bytes: [UInt8], reads: [Int]), SysError> {
        var bytes: [UInt8] = []
        var reads: [Int] = []
        while bytes.count <= limit {
            switch read(max: chunk) {
            case .failure(let error): return .failure(error)
            case .success(let piece):
                reads.append(piece.count)
                if piece.isEmpty { return .success((bytes, reads)) }
                bytes += piece
            }
        }
        return .failure(SysError("read: no end of data after \(limit) bytes", code: E2BIG))
    }

    /// One write(2); returns the count written.
    func write(_ bytes: [UInt8]) -> Result<Int, SysError> {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress!, bytes.count) }
        return n >= 0 ? .success(n) : .failure(SysError("write"))
    }

    /// A zero-length write(2): reaches the driver (the VFS does not short-circuit it), which answers
    /// ENODEV once the session has ended and 0 while it is live, without adding to the stream.
    func writeNothing() -> Result<Int, SysError> {
        var byte: UInt8 = 0
        let n = Glibc.write(fd, &byte, 0)
        return n >= 0 ? .success(n) : .failure(SysError("write 0 bytes"))
    }

    /// Writes every piece in turn, each with one write(2) that must be complete.
    func writeAll(_ bytes: [UInt8], pieces: [Int]) -> Result<Void, SysError> {
        var offset = 0
        for size in pieces + [bytes.count] where offset < bytes.count {
            let end = min(bytes.count, offset + size)
            switch write(Array(bytes[offset..<end])) {
            case .failure(let error): return .failure(error)
            case .success(let n) where n != end - offset:
                return .failure(SysError("short write \(n) of \(end - offset)", code: EIO))
            case .success: offset = end
            }
        }
        return .success(())
    }

    /// VFIO_MIG_GET_PRECOPY_INFO with the given input flags and argsz.
    func precopyInfo(flags: UInt32 = 0, argsz: UInt32 = 24) -> Result<PrecopyInfo, SysError> {
        var buffer: [UInt8] = Array(repeating: 0, count: 24)
        buffer.putLE(argsz, at: 0)
        buffer.putLE(flags, at: 4)
        let rc = buffer.withUnsafeMutableBytes { ioctl(fd, VFIORequest.migGetPrecopyInfo, $0.baseAddress!) }
        guard rc == 0 else { return .failure(SysError("VFIO_MIG_GET_PRECOPY_INFO")) }
        return .success(PrecopyInfo(
            argsz: buffer.getLE(UInt32.self, at: 0), flags: buffer.getLE(UInt32.self, at: 4),
            initialBytes: buffer.getLE(UInt64.self, at: 8), dirtyBytes: buffer.getLE(UInt64.self, at: 16)))
    }

    /// fcntl(F_GETFD) & FD_CLOEXEC, fcntl(F_GETFL) & O_ACCMODE.
    var isCloseOnExec: Bool { fcntl(fd, F_GETFD) & FD_CLOEXEC != 0 }
    var accessMode: Int32 { fcntl(fd, F_GETFL) & O_ACCMODE }
}
#endif
