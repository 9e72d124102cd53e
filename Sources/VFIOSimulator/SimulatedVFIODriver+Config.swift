import Synchronization
import SystemPackage

/// The simulated device's VFIO config region (`VFIO_PCI_CONFIG_REGION_INDEX`, 7): 256 bytes of PCI
/// config space, at the file offset the kernel's vfio-pci gives region N (N << 40). Reads and writes
/// of any length inside it succeed, except that the ids, the class code and the header type are
/// read-only, as on hardware; every other region reports size 0, and an index past the last
/// (VFIO_PCI_NUM_REGIONS, 9) is EINVAL.
extension SimulatedVFIODriver {
    static let configRegionIndex: UInt32 = 7
    static let regionCount: UInt32 = 9
    static let configRegionOffset: UInt64 = UInt64(configRegionIndex) << 40
    /// VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE.
    static let readWriteFlags: UInt32 = 0x3

    /// `VFIO_DEVICE_GET_REGION_INFO`: argsz, flags, index, cap_offset, size, offset.
    func regionInfo(_ buffer: UnsafeMutableRawBufferPointer) -> Result<Int32, Errno> {
        guard buffer.count >= 32 else { return .failure(.badAddress) }
        let argsz = buffer.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian
        let index = buffer.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard argsz >= 32, index < Self.regionCount else { return .failure(.invalidArgument) }
        let isConfig = index == Self.configRegionIndex
        let size: UInt64 = isConfig ? UInt64(configSpace.withLock { $0.count }) : 0
        buffer.storeBytes(of: (isConfig ? Self.readWriteFlags : 0).littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        buffer.storeBytes(of: size.littleEndian, toByteOffset: 16, as: UInt64.self)
        buffer.storeBytes(of: (UInt64(index) << 40).littleEndian, toByteOffset: 24, as: UInt64.self)
        return .success(0)
    }

    /// The range of the config space a positional access at `offset` of `count` bytes covers.
    private func configRange(offset: Int64, count: Int, size: Int) -> Range<Int>? {
        guard offset >= 0, UInt64(offset) >= Self.configRegionOffset else { return nil }
        let start = UInt64(offset) - Self.configRegionOffset
        guard start <= UInt64(size), UInt64(count) <= UInt64(size) - start else { return nil }
        return Int(start)..<Int(start) + count
    }

    func configRead(into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        configSpace.withLock { space in
            guard let range = configRange(offset: offset, count: buffer.count, size: space.count) else { return .failure(.invalidArgument) }
            space[range].withUnsafeBytes { buffer.copyMemory(from: $0) }
            return .success(range.count)
        }
    }

    func configWrite(from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        configSpace.withLock { space in
            guard let range = configRange(offset: offset, count: buffer.count, size: space.count) else { return .failure(.invalidArgument) }
            for (i, at) in range.enumerated() where !Self.readOnly.contains(at) { space[at] = buffer[i] }
            return .success(range.count)
        }
    }

    /// Vendor and device id, revision, class code, header type.
    static let readOnly: Set<Int> = Set(0..<4).union(8..<12).union([0x0e])
}

extension SimulatedVFIOConfiguration {
    /// The 256-byte config space the simulated device starts with: ids and class by payload (mtty:
    /// 4348:3253, a serial controller with two I/O BARs; mlx5: 15b3:101e, an Ethernet controller with
    /// a 64-bit memory BAR; otherwise 1b36:0010), then bytes derived from the seed in the
    /// device-specific area (0x40 on); with ``msixVectors``, an MSI-X capability at 0x40 (the only
    /// one: Status says there is a list, 0x34 points to it; table in BAR 0 at 0, pending bits at 0x800).
    public var pciConfigSpace: [UInt8] {
        var space = [UInt8](repeating: 0, count: 256)
        func le16(_ value: UInt16, at i: Int) {
            space[i] = UInt8(value & 0xff)
            space[i + 1] = UInt8(value >> 8)
        }
        switch payload {
        case .mtty:
            le16(0x4348, at: 0)
            le16(0x3253, at: 2)
            space[0x09] = 0x02
            space[0x0a] = 0x00
            space[0x0b] = 0x07
            space[0x10] = 0x01
            space[0x14] = 0x01
        case .mlx5:
            le16(0x15b3, at: 0)
            le16(0x101e, at: 2)
            space[0x0b] = 0x02
            space[0x10] = 0x0c
        case .opaque:
            le16(0x1b36, at: 0)
            le16(0x0010, at: 2)
            space[0x0b] = 0xff
        }
        space[0x3d] = 0x01
        var h = seed &+ 0x9e37_79b9_7f4a_7c15
        for i in 0x40..<0x100 {
            h ^= h << 13
            h ^= h >> 7
            h ^= h << 17
            space[i] = UInt8(truncatingIfNeeded: h)
        }
        if let vectors = msixVectors {
            space[0x06] |= 0x10
            space[0x34] = 0x40
            space[0x40] = 0x11
            space[0x41] = 0x00
            le16(UInt16(max(1, min(vectors, 2048)) - 1), at: 0x42)
            space[0x44..<0x48] = [0, 0, 0, 0]
            space[0x48..<0x4c] = [0x00, 0x08, 0, 0]
        }
        return space
    }
}
