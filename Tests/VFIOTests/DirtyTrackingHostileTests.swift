import SystemPackage
import Testing

@testable import VFIO
@testable import VFIOSimulator

/// A seam that lets the simulated kernel answer, then rewrites its answer as a hostile or buggy
/// kernel would.
private struct TamperingSyscalls: VFIOForwardingSyscalls {
    let base: any VFIOSyscalls
    let request: UInt
    let tamper: @Sendable (UnsafeMutableRawBufferPointer) -> Void

    func ioctl(_ fd: Int32, _ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        let result = base.ioctl(fd, request, argument)
        if request == self.request, case .buffer(let buffer) = argument { tamper(buffer) }
        return result
    }
}

@Suite("Dirty tracking against hostile kernel answers")
struct DirtyTrackingHostileTests {
    private static func container(tamper: @escaping @Sendable (UnsafeMutableRawBufferPointer) -> Void) throws -> (
        SimulatedVFIOContainer, VFIOType1Container
    ) {
        let owner = try SimulatedVFIOContainer()
        let fd = try #require(owner.fileDescriptor)
        let system = TamperingSyscalls(base: VFIOSystem.simulated, request: VFIOUAPI.iommuGetInfo, tamper: tamper)
        return (owner, VFIOType1Container(fileDescriptor: fd, system: system))
    }

    /// Rewrites the u32 at `offset` once the buffer holds the chain (a second, larger call).
    private static func patch(_ offset: Int, _ value: UInt32) -> @Sendable (UnsafeMutableRawBufferPointer) -> Void {
        { buffer in
            guard buffer.count > 24 else { return }
            for i in 0..<4 { buffer[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        }
    }

    @Test("A capability chain that loops back is refused")
    func loop() throws {
        // The migration capability (at 24) points its next at itself.
        let (owner, container) = try Self.container(tamper: Self.patch(24 + 4, 24))
        defer { owner.close() }
        #expect(throws: VFIOError.self) { _ = try container.info() }
    }

    @Test("A capability that points past the reply is refused")
    func overrun() throws {
        let (owner, container) = try Self.container(tamper: Self.patch(24 + 4, 4000))
        defer { owner.close() }
        #expect(throws: VFIOError.self) { _ = try container.info() }
    }

    @Test("A migration capability cut short by the reply's end is refused")
    func truncated() throws {
        // The last capability (DMA_AVAIL at 56) relabelled as a 32-byte migration capability: it
        // would end at 88, past the 72-byte reply.
        let (owner, container) = try Self.container(tamper: Self.patch(56, 0x0001_0002))
        defer { owner.close() }
        do {
            _ = try container.info()
            Issue.record("a truncated capability was accepted")
        } catch {
            #expect(error.description.contains("capability"))
        }
    }

    @Test("An argsz too large to be a capability chain is refused before allocating")
    func hugeArgsz() throws {
        let (owner, container) = try Self.container(tamper: { buffer in
            for i in 0..<4 { buffer[i] = 0xFF }
        })
        defer { owner.close() }
        #expect(throws: VFIOError.self) { _ = try container.info() }
    }

    @Test("An UNMAP_DMA answer of more bytes than asked is refused")
    func unmapOverclaim() throws {
        let owner = try SimulatedVFIOContainer()
        defer { owner.close() }
        let fd = try #require(owner.fileDescriptor)
        let system = TamperingSyscalls(base: VFIOSystem.simulated, request: VFIOUAPI.iommuUnmapDMA) { buffer in
            for i in 16..<24 { buffer[i] = 0xFF }
        }
        let container = VFIOType1Container(fileDescriptor: fd, system: system)
        let page = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        try container.mapDMA(iova: 0x1000, hostAddress: UInt64(UInt(bitPattern: page)), size: 4096)
        #expect(
            throws: VFIOError.unexpectedReply(
                operation: .unmapDMA, device: container.name, detail: "\(UInt64.max) bytes unmapped of 4096 asked")
        ) {
            try container.unmapDMA(iova: 0x1000, size: 4096)
        }
    }

    @Test("A START answer with a page size that is no power of two: refused, and logging stopped")
    func startPageSize() throws {
        let device = try SimulatedVFIODevice(.mtty())
        let system = TamperingSyscalls(base: VFIOSystem.simulated, request: VFIOUAPI.deviceFeature) { buffer in
            let flags = UInt32(buffer[4]) | UInt32(buffer[5]) << 8 | UInt32(buffer[6]) << 16
            guard flags & 0xFFFF == VFIOFeature.dmaLoggingStart.rawValue else { return }
            for i in 0..<8 { buffer[8 + i] = i == 0 ? 3 : 0 }
        }
        let client = VFIODeviceClient(
            deviceFD: try #require(device.deviceFileDescriptor).rawValue, name: device.name, system: system, ownsDeviceFD: false)
        #expect(
            throws: VFIOError.unexpectedReply(
                operation: .startDMALogging, device: device.name, detail: "the driver chose page size 3, not a power of two")
        ) {
            _ = try client.startDMALogging(ranges: [(0, 4096)], pageSize: 4096)
        }
        #expect(!device.isDMALoggingActive)
    }

    @Test(
        "A kernel's max_dirty_bitmap_size of 2^61 bytes or more splits a range without overflow",
        arguments: [UInt64(1) << 61, UInt64.max, UInt64.max - 7])
    func hugeBitmapLimit(maxBytes: UInt64) {
        // Found by fuzz-vfio-replies: (maxBytes / 8 * 64) trapped for these values.
        let pieces = VFIODirtyBitmap.chunks(iova: 1 << 20, length: 1 << 30, pageSize: 4096, maxBytes: maxBytes)
        #expect(pieces.count == 1)
        #expect(pieces.first?.iova == 1 << 20)
        #expect(pieces.first?.length == 1 << 30)
        let huge = VFIODirtyBitmap.chunks(iova: 0, length: .max - 4095, pageSize: 4096, maxBytes: maxBytes)
        #expect(huge.reduce(UInt64(0)) { $0 &+ $1.length } == UInt64.max - 4095)
        #expect(huge.allSatisfy { $0.length % 4096 == 0 })
    }

    @Test("Bitmaps are bounded before allocation; chunks never exceed the limit")
    func bounds() {
        #expect(throws: VFIODirtyBitmap.BitmapRequestError.self) {
            try VFIODirtyBitmap.wordCount(iova: 0, length: 1 << 62, pageSize: 4096, maxBytes: 256 << 20).get()
        }
        #expect(throws: VFIODirtyBitmap.BitmapRequestError.self) {
            try VFIODirtyBitmap.wordCount(iova: .max - 4095, length: 8192, pageSize: 4096, maxBytes: 256 << 20).get()
        }
        let pieces = VFIODirtyBitmap.chunks(iova: 0, length: 1 << 40, pageSize: 4096, maxBytes: 1 << 20)
        #expect(pieces.count == 32)  // 1 MiB of bitmap covers 32 GiB at 4 KiB
        #expect(
            pieces.allSatisfy {
                (try? VFIODirtyBitmap.wordCount(iova: $0.iova, length: $0.length, pageSize: 4096, maxBytes: 1 << 20).get()) != nil
            })
        #expect(pieces.reduce(0) { $0 + $1.length } == 1 << 40)
    }
}
