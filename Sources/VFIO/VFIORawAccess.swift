// The raw escape hatch (package access): single uAPI calls with no client-side validation, retry or
// interpretation, for checks that compare what a device — the real kernel or the simulator — answers
// to requests the typed API deliberately refuses or smooths over (invalid states, STOP_COPY→PRE_COPY,
// argument errors, the errno of one read or write). Everything still goes through the syscall seam.

import SystemPackage

/// Devices whose uAPI calls go through a `VFIODeviceClient`: `KernelVFIODevice` and (in VFIOSimulator)
/// `SimulatedVFIODevice`.
package protocol VFIOClientBackedDevice: VFIOMigrationDevice {
    var client: VFIODeviceClient { get }
}

extension KernelVFIODevice: VFIOClientBackedDevice {}

/// What one raw SET of `MIG_DEVICE_STATE` answered.
package struct VFIORawSetStateAnswer: CustomStringConvertible {
    /// The ioctl's errno, nil on success.
    package var errno: Errno?
    /// The payload as the kernel copied it back (it echoes the requested state, also on failure).
    package var reply: VFIOMigDeviceStatePayload?
    /// The new data fd when the SET opened a session; it is owned here and closed when released.
    package var dataFD: VFIOMigrationDataFD?

    package var description: String {
        let result = errno.map { "\($0) (errno \($0.rawValue))" } ?? "ok"
        let echoed = reply.map { "echoed state \($0.deviceState), data_fd \($0.dataFD)" } ?? "no reply"
        return "\(result), \(echoed)"
    }
}

/// `struct vfio_region_info`: `u32 argsz; u32 flags; u32 index; u32 cap_offset; u64 size; u64 offset` (32 bytes).
package struct VFIORegionInfo: Sendable, Equatable {
    package static let size = 32
    package var flags: UInt32
    package var index: UInt32
    package var size: UInt64
    /// Where the region starts in the device fd's file offsets.
    package var offset: UInt64
}

extension VFIODeviceClient {
    /// One `VFIO_DEVICE_FEATURE` with the given header and payload; returns the result and every byte
    /// (header and payload) as the kernel left them. `argsz` defaults to 8 + the payload's size.
    package func rawFeature(argsz: UInt32?, flags: UInt32, payload: [UInt8]) -> (result: Result<Int32, Errno>, bytes: [UInt8]) {
        guard let fd = deviceFD else { return (.failure(.badFileDescriptor), []) }
        var bytes =
            VFIODeviceFeatureHeader(argsz: argsz ?? UInt32(VFIODeviceFeatureHeader.size + payload.count), flags: flags).bytes
            + payload
        let result = bytes.withUnsafeMutableBytes { system.ioctl(fd, VFIOUAPI.deviceFeature, .buffer($0)) }
        return (result, bytes)
    }

    /// One GET of `MIG_DEVICE_STATE`: the payload as the kernel wrote it (data_fd included).
    func rawGetState() -> Result<VFIOMigDeviceStatePayload, Errno> {
        let payload = VFIOMigDeviceStatePayload(deviceState: 0, dataFD: -7).bytes
        let (result, bytes) = rawFeature(argsz: nil, flags: VFIOFeature.migDeviceState.rawValue | VFIOUAPI.featureGet, payload: payload)
        return result.flatMap { _ in
            VFIOMigDeviceStatePayload(bytes: bytes.dropFirst(VFIODeviceFeatureHeader.size)).map { .success($0) } ?? .failure(.badAddress)
        }
    }

    /// One SET of `MIG_DEVICE_STATE` with any raw value. A data fd the SET returns is wrapped (and owned);
    /// the state the client's data fds see is refreshed with a GET afterwards.
    func rawSetState(_ raw: UInt32) -> VFIORawSetStateAnswer {
        let payload = VFIOMigDeviceStatePayload(deviceState: raw, dataFD: -7).bytes
        let (result, bytes) = rawFeature(argsz: nil, flags: VFIOFeature.migDeviceState.rawValue | VFIOUAPI.featureSet, payload: payload)
        let reply = VFIOMigDeviceStatePayload(bytes: bytes.dropFirst(VFIODeviceFeatureHeader.size))
        var answer = VFIORawSetStateAnswer(errno: nil, reply: reply, dataFD: nil)
        if case .failure(let errno) = result { answer.errno = errno }
        if answer.errno == nil, let fd = reply?.dataFD, fd >= 0 {
            answer.dataFD = VFIOMigrationDataFD(
                fd: fd, direction: raw == VFIODeviceState.resuming.rawValue ? .resume : .save, deviceName: name,
                system: system, stateCache: stateCache)
        }
        stateCache.value = try? deviceState()
        return answer
    }

    /// One `VFIO_DEVICE_RESET`.
    func rawReset() -> Result<Void, Errno> {
        guard let fd = deviceFD else { return .failure(.badFileDescriptor) }
        let result = system.ioctl(fd, VFIOUAPI.deviceReset, .none).map { _ in () }
        stateCache.value = try? deviceState()
        return result
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index`.
    package func regionInfo(_ index: UInt32) -> Result<VFIORegionInfo, Errno> {
        guard let fd = deviceFD else { return .failure(.badFileDescriptor) }
        var bytes = [UInt8](repeating: 0, count: VFIORegionInfo.size)
        LittleEndianBytes.store(UInt32(VFIORegionInfo.size), into: &bytes, at: 0)
        LittleEndianBytes.store(index, into: &bytes, at: 8)
        let result = bytes.withUnsafeMutableBytes { system.ioctl(fd, VFIOUAPI.deviceGetRegionInfo, .buffer($0)) }
        return result.map { _ in
            VFIORegionInfo(
                flags: LittleEndianBytes.load(UInt32.self, from: bytes, at: 4), index: index,
                size: LittleEndianBytes.load(UInt64.self, from: bytes, at: 16),
                offset: LittleEndianBytes.load(UInt64.self, from: bytes, at: 24))
        }
    }

    /// Writes `bytes` at `offset` inside region `index` of the device fd (`pwrite(2)`), as a guest's
    /// access to a BAR would.
    package func writeRegion(_ index: UInt32, offset: UInt64, bytes: [UInt8]) -> Result<Void, Errno> {
        guard let fd = deviceFD else { return .failure(.badFileDescriptor) }
        return regionInfo(index).flatMap { info in
            guard offset + UInt64(bytes.count) <= info.size else { return .failure(.invalidArgument) }
            let written = bytes.withUnsafeBytes { system.pwrite(fd, from: $0, offset: Int64(bitPattern: info.offset + offset)) }
            return written.flatMap { $0 == bytes.count ? .success(()) : .failure(.ioError) }
        }
    }

    /// Reads `count` bytes at `offset` inside region `index` of the device fd (`pread(2)`), e.g.
    /// the PCI config space (region 7) as QEMU's vfio-pci reads it.
    package func readRegion(_ index: UInt32, offset: UInt64, count: Int) -> Result<[UInt8], Errno> {
        guard let fd = deviceFD else { return .failure(.badFileDescriptor) }
        return regionInfo(index).flatMap { info in
            guard count >= 0, offset <= info.size, UInt64(count) <= info.size - offset else { return .failure(.invalidArgument) }
            var bytes = [UInt8](repeating: 0, count: count)
            let read = bytes.withUnsafeMutableBytes { system.pread(fd, into: $0, offset: Int64(bitPattern: info.offset + offset)) }
            return read.flatMap { $0 == count ? .success(bytes) : .failure(.ioError) }
        }
    }
}

extension KernelVFIODevice {
    /// A raw `VFIO_DEVICE_FEATURE` (see `VFIODeviceClient.rawFeature`), for checks of the kernel's own answers.
    package func rawFeature(argsz: UInt32? = nil, flags: UInt32, payload: [UInt8]) -> (result: Result<Int32, Errno>, bytes: [UInt8]) {
        client.rawFeature(argsz: argsz, flags: flags, payload: payload)
    }

    /// A raw SET of `MIG_DEVICE_STATE` with no client-side validation: also ERROR, values ≥ 8 and
    /// STOP_COPY→PRE_COPY(_P2P), which hangs kernels without the FSM fix (ask it with a deadline).
    package func rawSetState(_ raw: UInt32) -> VFIORawSetStateAnswer { client.rawSetState(raw) }

    /// `VFIO_DEVICE_GET_REGION_INFO` for region `index` (PCI BARs are 0–5, config space 7).
    package func regionInfo(_ index: UInt32) -> Result<VFIORegionInfo, Errno> { client.regionInfo(index) }

    /// Writes into a region of the device (e.g. a register of an I/O BAR), as the guest would.
    package func writeRegion(_ index: UInt32, offset: UInt64, bytes: [UInt8]) -> Result<Void, Errno> {
        client.writeRegion(index, offset: offset, bytes: bytes)
    }

    /// Reads from a region of the device (e.g. the PCI config space, region 7).
    package func readRegion(_ index: UInt32, offset: UInt64, count: Int) -> Result<[UInt8], Errno> {
        client.readRegion(index, offset: offset, count: count)
    }
}

extension VFIOMigrationDataFD {
    private var rawFD: Int32? { fileDescriptor?.rawValue }

    /// One `read(2)` of at most `count` bytes: the bytes, or the errno (no EINTR retry, no
    /// interpretation of 0 or ENOMSG).
    package func rawRead(count: Int) -> Result<[UInt8], Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        var bytes = [UInt8](repeating: 0, count: count)
        let result = bytes.withUnsafeMutableBytes { system.read(fd, into: $0) }
        return result.map { Array(bytes[0..<$0]) }
    }

    /// One `write(2)`; an empty `bytes` still reaches the driver.
    package func rawWrite(_ bytes: [UInt8]) -> Result<Int, Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        return bytes.withUnsafeBytes { system.write(fd, from: $0) }
    }

    /// One `pread(2)` of a byte at offset 0.
    package func rawPread() -> Result<Int, Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        var byte: [UInt8] = [0]
        return byte.withUnsafeMutableBytes { system.pread(fd, into: $0, offset: 0) }
    }

    /// One `pwrite(2)` of a byte at offset 0.
    package func rawPwrite() -> Result<Int, Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        return [UInt8(0)].withUnsafeBytes { system.pwrite(fd, from: $0, offset: 0) }
    }

    /// One `lseek(2)` to offset 0 (SEEK_SET).
    package func rawSeek() -> Result<Int64, Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        return system.lseek(fd, 0, 0)
    }

    /// One `VFIO_MIG_GET_PRECOPY_INFO` with the given `flags` and `argsz` in a 24-byte buffer; the
    /// struct as the kernel left it.
    package func rawPrecopyInfo(flags: UInt32 = 0, argsz: UInt32 = UInt32(VFIOPrecopyInfoLayout.size)) -> Result<
        VFIOPrecopyInfoLayout, Errno
    > {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        var bytes = VFIOPrecopyInfoLayout(argsz: argsz, flags: flags).bytes
        let result = bytes.withUnsafeMutableBytes { system.ioctl(fd, VFIOUAPI.migGetPrecopyInfo, .buffer($0)) }
        return result.flatMap { _ in VFIOPrecopyInfoLayout(bytes: bytes).map { .success($0) } ?? .failure(.badAddress) }
    }

    /// One `ioctl(2)` of any request with a zeroed 24-byte buffer.
    package func rawIoctl(_ request: UInt) -> Result<Int32, Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        var bytes = [UInt8](repeating: 0, count: 24)
        return bytes.withUnsafeMutableBytes { system.ioctl(fd, request, .buffer($0)) }
    }

    /// Close-on-exec and the access mode of the fd (`fcntl`).
    package func descriptorFlags() -> Result<VFIODescriptorFlags, Errno> {
        guard let fd = rawFD else { return .failure(.badFileDescriptor) }
        return VFIOSystem.descriptorFlags(fd)
    }
}
