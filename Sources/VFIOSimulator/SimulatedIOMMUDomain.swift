import Synchronization
import SystemPackage
import VFIO

/// Where a simulated device's DMA write lands: `bytes` written at `hostAddress` of this process
/// (the `vaddr` of the mapping plus the offset). A VMM installs one that takes its guest-RAM
/// lock, so device writes and its own readers do not race; the default writes the memory directly.
public typealias SimulatedDMAMemoryAccessor = @Sendable (_ hostAddress: UInt64, _ bytes: [UInt8]) -> Void

/// The default accessor: a plain store into this process's memory at `hostAddress`.
public let directDMAMemoryAccessor: SimulatedDMAMemoryAccessor = { hostAddress, bytes in
    guard let pointer = UnsafeMutableRawPointer(bitPattern: UInt(hostAddress)) else { return }
    bytes.withUnsafeBytes { source in
        guard let base = source.baseAddress else { return }
        pointer.copyMemory(from: base, byteCount: source.count)
    }
}

/// One IOVA → host-address mapping (`VFIO_IOMMU_MAP_DMA`, `IOMMU_IOAS_MAP`).
struct SimulatedDMAMapping: Sendable, Equatable {
    var iova: UInt64
    var hostAddress: UInt64
    var size: UInt64
    var writable: Bool

    var last: UInt64 { iova &+ (size &- 1) }
    func contains(_ address: UInt64) -> Bool { address >= iova && address - iova < size }
}

/// An IO address space: the mappings a type1 container or an iommufd IOAS holds, and the memory
/// accessor the simulated devices' DMA writes go through.
package final class SimulatedIOMMUDomain: Sendable {
    /// The IOMMU page size the simulator models (the smallest x86 IOMMU page).
    static let pageSize: UInt64 = 4096

    struct State {
        var mappings: [SimulatedDMAMapping] = []
        var accessor: SimulatedDMAMemoryAccessor = directDMAMemoryAccessor
        /// The logs that watch this domain's mappings (a type1 container's, every dirty HWPT's).
        var logs: [SimulatedIOMMUDirtyLog] = []
    }

    let state = Mutex(State())

    func setAccessor(_ accessor: SimulatedDMAMemoryAccessor?) {
        state.withLock { $0.accessor = accessor ?? directDMAMemoryAccessor }
    }

    /// Adds a mapping: EINVAL when empty, unaligned or overflowing, EEXIST when it overlaps one.
    func map(_ mapping: SimulatedDMAMapping) -> Result<Void, Errno> {
        let page = Self.pageSize
        guard mapping.size > 0, (mapping.iova | mapping.hostAddress | mapping.size) % page == 0,
            !mapping.iova.addingReportingOverflow(mapping.size - 1).overflow,
            !mapping.hostAddress.addingReportingOverflow(mapping.size - 1).overflow
        else { return .failure(.invalidArgument) }
        return state.withLock { state in
            if state.mappings.contains(where: { $0.iova <= mapping.last && mapping.iova <= $0.last }) { return .failure(.fileExists) }
            state.mappings.append(mapping)
            state.mappings.sort { $0.iova < $1.iova }
            return .success(())
        }
    }

    /// Removes the mappings inside `[iova, iova + size)`; EINVAL when the range cuts one in two
    /// (type1 v2 and iommufd refuse to split); returns the bytes unmapped.
    func unmap(iova: UInt64, size: UInt64) -> Result<UInt64, Errno> {
        guard size > 0, !iova.addingReportingOverflow(size - 1).overflow else { return .failure(.invalidArgument) }
        let last = iova + (size - 1)
        return state.withLock { state in
            let touched = state.mappings.filter { $0.iova <= last && iova <= $0.last }
            if touched.contains(where: { $0.iova < iova || $0.last > last }) { return .failure(.invalidArgument) }
            state.mappings.removeAll { $0.iova >= iova && $0.last <= last }
            for log in state.logs { log.forget(iova: iova, last: last) }
            return .success(touched.reduce(0) { $0 &+ $1.size })
        }
    }

    var mappings: [SimulatedDMAMapping] { state.withLock { $0.mappings } }

    /// Whether `[iova, iova + size)` starts and ends at mapping boundaries and holds at least one.
    func coversWholeMappings(iova: UInt64, size: UInt64) -> Bool {
        let last = iova &+ (size &- 1)
        let touched = mappings.filter { $0.iova <= last && iova <= $0.last }
        return !touched.isEmpty && !touched.contains { $0.iova < iova || $0.last > last }
    }

    /// A DMA write by a device attached through `log` (nil: through no dirty log): translates each
    /// page through the mappings (EFAULT for an unmapped or read-only page, before anything is
    /// written), writes through the accessor, and marks the pages in `log` when it is tracking.
    /// Returns the IOVA of each page written.
    func dmaWrite(iova: UInt64, bytes: [UInt8], log: SimulatedIOMMUDirtyLog?) -> Result<[UInt64], Errno> {
        guard !bytes.isEmpty else { return .success([]) }
        guard !iova.addingReportingOverflow(UInt64(bytes.count) - 1).overflow else { return .failure(.badAddress) }
        let (segments, accessor) = state.withLock { state -> ([(host: UInt64, range: Range<Int>)]?, SimulatedDMAMemoryAccessor) in
            var segments: [(host: UInt64, range: Range<Int>)] = []
            var offset = 0
            while offset < bytes.count {
                let address = iova + UInt64(offset)
                guard let mapping = state.mappings.first(where: { $0.contains(address) }), mapping.writable else {
                    return (nil, state.accessor)
                }
                let count = Int(min(UInt64(bytes.count - offset), mapping.size - (address - mapping.iova)))
                segments.append((mapping.hostAddress + (address - mapping.iova), offset..<offset + count))
                offset += count
            }
            return (segments, state.accessor)
        }
        guard let segments else { return .failure(.badAddress) }
        for segment in segments { accessor(segment.host, Array(bytes[segment.range])) }
        let first = iova / Self.pageSize
        let last = (iova + UInt64(bytes.count) - 1) / Self.pageSize
        let pages = (first...last).map { $0 * Self.pageSize }
        log?.mark(pages)
        return .success(pages)
    }
}

/// One IOMMU dirty log: a type1 container's (`VFIO_IOMMU_DIRTY_PAGES`) or a HWPT's
/// (`IOMMU_HWPT_SET_DIRTY_TRACKING`). It records the 4 KiB pages written by DMA while enabled.
package final class SimulatedIOMMUDirtyLog: Sendable {
    struct State {
        var enabled = false
        var pages = Set<UInt64>()
    }

    let state = Mutex(State())

    var isEnabled: Bool { state.withLock { $0.enabled } }

    func setEnabled(_ enabled: Bool) {
        state.withLock { state in
            // Starting again keeps the log (type1 START on a started container is a no-op);
            // stopping drops it.
            if !enabled { state.pages.removeAll() }
            state.enabled = enabled
        }
    }

    func mark(_ pages: [UInt64]) {
        state.withLock { state in
            guard state.enabled else { return }
            state.pages.formUnion(pages)
        }
    }

    func forget(iova: UInt64, last: UInt64) {
        state.withLock { $0.pages = $0.pages.filter { $0 < iova || $0 > last } }
    }

    /// Read and (unless `keep`) clear `[iova, iova + length)` into u64 words at `pageSize` (a bit is
    /// set when any 4 KiB page inside its page was written).
    func readAndClear(iova: UInt64, length: UInt64, pageSize: UInt64, keep: Bool = false) -> [UInt64] {
        let pages = length / pageSize
        var words = [UInt64](repeating: 0, count: Int(pages / 64 + (pages % 64 == 0 ? 0 : 1)))
        state.withLock { state in
            let last = iova &+ (length &- 1)
            let hits = state.pages.filter { $0 >= iova && $0 <= last }
            for page in hits {
                let bit = (page - iova) / pageSize
                words[Int(bit / 64)] |= 1 << (bit % 64)
            }
            if !keep { state.pages.subtract(hits) }
        }
        return words
    }
}

/// How a simulated device reaches memory: the domain its DMA is translated by and the IOMMU log
/// (if any) that sees its writes.
struct SimulatedIOMMUAttachment: Sendable {
    let domain: SimulatedIOMMUDomain
    let log: SimulatedIOMMUDirtyLog?
}

/// Writes `words` (the kernel's u64 bitmap) at the user pointer `address`, OR-ing into what is
/// there as the kernel only sets bits. EFAULT for a null pointer.
func storeBitmap(_ words: [UInt64], at address: UInt64) -> Result<Void, Errno> {
    guard let pointer = UnsafeMutableRawPointer(bitPattern: UInt(address)) else { return .failure(.badAddress) }
    for (index, word) in words.enumerated() where word != 0 {
        let slot = pointer.advanced(by: index * 8)
        let old = slot.loadUnaligned(as: UInt64.self)
        slot.storeBytes(of: (old | word).littleEndian, as: UInt64.self)
    }
    return .success(())
}

/// Reads `count` bytes at the user pointer `address` (EFAULT for a null pointer).
func loadUserBytes(at address: UInt64, count: Int) -> Result<[UInt8], Errno> {
    guard let pointer = UnsafeRawPointer(bitPattern: UInt(address)) else { return .failure(.badAddress) }
    return .success(Array(UnsafeRawBufferPointer(start: pointer, count: count)))
}
