import Foundation
import FuzzSupport
import LibFuzzerDriver
import MigrationCore
import Synchronization
import SystemPackage

@testable import VFIO
@testable import VFIOPCIHandler

// What the kernel answers the dirty-tracking and pre-copy code, from a hostile or buggy kernel:
// a VFIOSyscalls seam whose every ioctl result (an errno, or success with the argument buffer
// rewritten) and every bitmap the kernel writes through a user pointer come from the input.
// Over it: a type1 container (GET_INFO's capability chain, DIRTY_PAGES START/GET_BITMAP/STOP,
// UNMAP_DMA) through VFIOType1DirtyTracker; a device (PROBE, DMA logging START/REPORT/STOP,
// PRECOPY_INFO v2, migration flags, SET to PRE_COPY and PRECOPY_INFO on the data fd it returns)
// through VFIODeviceLoggingTracker; an iommufd (HWPT_ALLOC, SET_DIRTY_TRACKING,
// GET_DIRTY_BITMAP, IOAS_UNMAP) through VFIOIOMMUFDDirtyTracker. The guest memory the trackers
// cover (1 to 3 ranges of at most 4 MiB) also comes from the input.
//
// One ioctl answer: a control byte c. c & 0x80: failure with errno ERRNOS[c & 7]. Otherwise
// success; when the call carries a bitmap pointer, a length byte n and up to 8 * n bitmap bytes
// (never more than the request's own bitmap size); then c & 7 patches of the argument buffer,
// each an offset byte, a length byte and that many bytes. Once the input is spent every call
// fails with EIO, so every retry loop ends.

let errnos: [Errno] = [
    .interrupted, .invalidArgument, .inappropriateIOCTLForDevice, .notSupported, .ioError, .resourceTemporarilyUnavailable,
    .noMessage, .badFileDescriptor
]

enum FD {
    static let container: Int32 = 100
    static let device: Int32 = 101
    static let iommufd: Int32 = 102
}

final class FuzzSyscalls: VFIOSyscalls {
    private let input: Mutex<FuzzInput>
    init(_ bytes: [UInt8]) { self.input = Mutex(FuzzInput(bytes: bytes)) }

    private func load64(_ b: UnsafeMutableRawBufferPointer, _ at: Int) -> UInt64 {
        guard at + 8 <= b.count else { return 0 }
        return (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }

    /// The user memory a request asks the kernel to write a bitmap into: (pointer, bytes).
    private func bitmapTarget(_ fd: Int32, _ request: UInt, _ b: UnsafeMutableRawBufferPointer) -> (UInt64, Int)? {
        func words(_ length: UInt64, _ pageSize: UInt64) -> Int? {
            guard pageSize > 0, pageSize.nonzeroBitCount == 1 else { return nil }
            let pages = length / pageSize
            let words = pages / 64 + (pages % 64 == 0 ? 0 : 1)
            return words <= 1 << 26 ? Int(words) * 8 : nil
        }
        switch (fd, request) {
        case (FD.container, VFIOUAPI.iommuDirtyPages):
            guard b.count >= 48, load64(b, 0) >> 32 == UInt64(VFIOUAPI.dirtyPagesGetBitmap) else { return nil }
            let size = load64(b, 32)
            return size <= 1 << 28 ? (load64(b, 40), Int(size)) : nil
        case (FD.device, VFIOUAPI.deviceFeature):
            guard b.count >= 40, load64(b, 0) >> 32 & 0xFFFF == UInt64(VFIOFeature.dmaLoggingReport.rawValue) else { return nil }
            return words(load64(b, 16), load64(b, 24)).map { (load64(b, 32), $0) }
        case (FD.iommufd, VFIOUAPI.iommuHWPTGetDirtyBitmap):
            guard b.count >= 48 else { return nil }
            return words(load64(b, 24), load64(b, 32)).map { (load64(b, 40), $0) }
        default:
            return nil
        }
    }

    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        input.withLock { input in
            guard input.remaining > 0 else { return .failure(.ioError) }
            let c = input.byte()
            if c & 0x80 != 0 { return .failure(errnos[Int(c & 7)]) }
            guard case .buffer(let b) = argument else { return .success(0) }
            if let (pointer, size) = bitmapTarget(fd, request, b), let base = UnsafeMutableRawPointer(bitPattern: UInt(pointer)) {
                let bytes = input.take(min(size, 8 * Int(input.byte())))
                base.copyMemory(from: bytes, byteCount: bytes.count)
            }
            for _ in 0..<(c & 7) where !b.isEmpty {
                let offset = Int(input.byte()) % b.count
                let patch = input.take(min(Int(input.byte()), b.count - offset))
                for (i, v) in patch.enumerated() { b[offset + i] = v }
            }
            return .success(Int32(c >> 3 & 3))
        }
    }

    func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> { .failure(.noSuchFileOrDirectory) }
    func close(_ fd: Int32) -> Result<Void, Errno> { .success(()) }
    func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> { .failure(.ioError) }
    func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> { .failure(.ioError) }
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> { .failure(.ioError) }
    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> { .failure(.ioError) }
    func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) -> Result<Int64, Errno> { .failure(.illegalSeek) }
    func poll(_ fd: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> { .success(events) }
    func readlink(_ path: String) -> Result<String, Errno> { .failure(.noSuchFileOrDirectory) }
    func listDirectory(_ path: String) -> Result<[String], Errno> { .failure(.noSuchFileOrDirectory) }
}

/// With FUZZ_TRACE set (replaying one input), what each step answered goes to stdout.
let tracing = getenv("FUZZ_TRACE") != nil
func trace<T>(_ label: String, _ body: () throws -> T) -> T? {
    do {
        let value = try body()
        if tracing { print("\(label): \(value)") }
        return value
    } catch {
        if tracing { print("\(label): \(error)") }
        return nil
    }
}

/// Starts, collects twice and stops.
func exercise(_ tracker: any DirtyPageTracker, _ ranges: [GuestMemoryRange]) {
    guard trace("start \(tracker.trackerName)", { try tracker.startTracking(ranges: ranges, pageSize: 4096) }) != nil else {
        tracker.stopTracking()
        return
    }
    for _ in 0..<2 {
        guard let bitmaps = trace("collect", { try tracker.collectDirtyPages().map { $0.dirtyPageCount } }) else { break }
        _ = bitmaps
    }
    tracker.stopTracking()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    // The guest memory: 1 to 3 ranges, each at most 4 MiB, below 4 GiB.
    var ranges: [GuestMemoryRange] = []
    for _ in 0...(input.byte() % 3) {
        let start = UInt64(input.be32()) & 0xFFFF_F000
        let length = (UInt64(input.byte()) + 1) << 14
        ranges.append(GuestMemoryRange(start: start, length: length))
    }
    let which = input.byte()
    let system = FuzzSyscalls(input.rest())

    if which & 1 != 0 {
        let container = VFIOType1Container(fileDescriptor: FileDescriptor(rawValue: FD.container), system: system)
        if let info = trace("GET_INFO", { try container.info() }), let capability = info.migration {
            _ = (capability.pageSize, info.capabilityIDs, info.dmaMappingsAvailable)
        }
        exercise(VFIOType1DirtyTracker(container: container), ranges)
        _ = trace("UNMAP_DMA", { try container.unmapDMA(iova: 0x10000, size: 0x4000) })
    }
    if which & 2 != 0 {
        let client = VFIODeviceClient(deviceFD: FD.device, name: "0000:00:01.0", system: system, ownsDeviceFD: false)
        _ = trace("PROBE", { try client.dmaLoggingSupport() })
        exercise(VFIODeviceLoggingTracker(client: client), ranges)
        _ = trace("PRECOPY_INFO_v2", { try client.enablePrecopyInfoV2() })
        _ = trace("MIGRATION", { try client.migrationFlags() })
        if let fd = trace("SET PRE_COPY", { try client.setState(.preCopy) }) ?? nil {
            _ = trace("PRECOPY_INFO", { try fd.precopyInfo() })
            _ = trace("PRECOPY_INFO", { try fd.precopyInfo() })
            _ = try? fd.close()
        }
        _ = trace("DATA_SIZE", { try client.stopCopySize() })
        _ = trace("GET state", { try client.deviceState() })
    }
    if which & 4 != 0 {
        let iommufd = VFIOIOMMUFD(fileDescriptor: FileDescriptor(rawValue: FD.iommufd), system: system)
        let hwpt = trace("HWPT_ALLOC", { try iommufd.allocateHWPT(deviceID: 1, ioasID: 2, dirtyTracking: true) }) ?? 3
        exercise(VFIOIOMMUFDDirtyTracker(iommufd: iommufd, hwptID: hwpt), ranges)
        _ = trace("IOAS_UNMAP", { try iommufd.unmapIOAS(2, iova: 0x10000, length: 0x4000) })
    }
    return 0
}

runLibFuzzer(fuzzOne)
