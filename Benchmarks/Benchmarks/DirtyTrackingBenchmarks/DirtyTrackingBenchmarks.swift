// The cost of one dirty sync per GiB of tracked guest memory, beside the RAM pass it serves,
// measured in the same iterations over the same 1 GiB example-VM RAM (issue #17).
//
// Sync: what the source does at every pass once devices write guest memory by DMA: read and
// clear the tracker's bitmap of 1 GiB at 4 KiB pages (32 KiB of bitmap), count its pages (the
// statistics), and merge them into the RAM's own dirty bitmap (GuestRAM.mergeDirty, every
// address checked). The tracker is an in-memory one with 1 % of the pages written by DMA since
// the previous sync (and, in a second benchmark, all of them: the all-mapped-dirty fallback);
// a VFIO tracker adds its one ioctl per range on top (the simulator's is not a kernel's, so it
// is not measured here).
// RAM pass: the RAM handler's pass without device tracking: every page of the 1 GiB taken from
// the dirty bitmap and written as RAM records (zero pages as one byte) to a sink that discards.
// "sync ppm of RAM pass" is the ratio, in millionths: what device tracking adds to each full pass.
import Benchmark
import ExampleVM
import MigrationCore
import MigrationStream
import Synchronization

let gib = 1 << 30
let pageSize = GuestRAM.pageSize

/// A tracker holding a bitmap in memory: what a device's DMA log reports.
final class BenchTracker: DirtyPageTracker {
    let kind = DirtyTrackingKind.deviceDMALogging
    let trackerName = "bench"
    private let bitmaps = Mutex<[DirtyPageBitmap]>([])

    func startTracking(ranges: [GuestMemoryRange], pageSize: UInt64) throws {
        bitmaps.withLock { $0 = ranges.map { DirtyPageBitmap(clean: $0, pageSize: pageSize) } }
    }

    func collectDirtyPages() throws -> [DirtyPageBitmap] {
        bitmaps.withLock { current in
            let out = current
            current = current.map { DirtyPageBitmap(clean: $0.range, pageSize: $0.pageSize) }
            return out
        }
    }

    func stopTracking() { bitmaps.withLock { $0 = [] } }

    /// DMA wrote `fraction` of the pages (every 1/fraction-th page): untimed, before a sync.
    func dirty(every stride: Int) {
        bitmaps.withLock { current in
            for i in current.indices {
                var address = current[i].range.start
                while current[i].markDirty(guestAddress: address) {
                    address += UInt64(stride * pageSize)
                }
            }
        }
    }

    var bitmapBytes: Int { bitmaps.withLock { $0.reduce(0) { $0 + $1.words.count * 8 } } }
}

struct SyncMismatch: Error, CustomStringConvertible { var description: String }

/// Discards what it is given.
final class NullSink: ByteSink {
    var bytes = 0
    func write(_ buffer: UnsafeRawBufferPointer) throws { bytes += buffer.count }
}

let benchmarks: @Sendable () -> Void = {
    let syncMicros = BenchmarkMetric.custom("sync us per GiB", polarity: .prefersSmaller, useScalingFactor: false)
    let bitmapKiB = BenchmarkMetric.custom("bitmap KiB per GiB", polarity: .prefersSmaller, useScalingFactor: false)
    let passMillis = BenchmarkMetric.custom("RAM pass ms per GiB", polarity: .prefersSmaller, useScalingFactor: false)
    let ppm = BenchmarkMetric.custom("sync ppm of RAM pass", polarity: .prefersSmaller, useScalingFactor: false)

    for (every, label) in [(100, "1 % of pages"), (1, "every page")] {
        Benchmark(
            "Dirty sync of 1 GiB (\(label) written by DMA) vs one RAM pass of 1 GiB",
            configuration: .init(
                metrics: [.wallClock, syncMicros, bitmapKiB, passMillis, ppm], warmupIterations: 1, maxDuration: .seconds(30),
                maxIterations: 10)
        ) { benchmark in
            // 1 GiB in the example VM's layout ("pc.ram" and "pc.bios"), one page in eight written.
            let ram = try GuestRAM(
                layout: [RAMBlockLayout(name: "pc.ram", size: gib - (256 << 10)), RAMBlockLayout(name: "pc.bios", size: 256 << 10)])
            let total = ram.totalBytes / pageSize
            for page in stride(from: 0, to: ram.pageCount(block: 0), by: 8) { ram.guestWrite(block: 0, page: page, seed: UInt64(page)) }
            let handler = RAMHandler(ram: ram, pagesPerSection: total)
            let tracker = BenchTracker()
            try tracker.startTracking(ranges: ram.guestRanges, pageSize: UInt64(pageSize))
            let clock = ContinuousClock()
            for _ in benchmark.scaledIterations {
                // The RAM pass without device tracking: every page.
                ram.markAllDirty()
                let sink = NullSink()
                let writer = StreamWriter(sink: sink)
                let passStart = clock.now
                _ = try ram.takeDirtyPages(max: .max) { _, page, bytes in
                    let isZero = bytes.allSatisfy { $0 == 0 }
                    try writer.writeBE64(UInt64(page * pageSize) | (isZero ? RAMHandler.Flag.zero : RAMHandler.Flag.page))
                    if isZero { try writer.writeU8(0) } else { try writer.writeBytes(bytes) }
                }
                try writer.flush()
                let pass = clock.now - passStart
                blackHole(sink.bytes)

                // One sync: collect, count, merge.
                tracker.dirty(every: every)
                let bitmapBytes = tracker.bitmapBytes
                let syncStart = clock.now
                let bitmaps = try tracker.collectDirtyPages()
                let pages = bitmaps.reduce(0) { $0 + $1.dirtyPageCount }
                let merged = ram.mergeDirty(bitmaps)
                let sync = clock.now - syncStart
                guard pages == merged.newlyDirty, pages >= total / every else {
                    throw SyncMismatch(description: "the sync merged \(merged.newlyDirty) of \(pages) pages")
                }
                _ = try ram.takeDirtyPages(max: .max) { _, _, _ in }
                blackHole(handler)

                let syncNanos = sync.components.seconds * 1_000_000_000 + sync.components.attoseconds / 1_000_000_000
                let passNanos = pass.components.seconds * 1_000_000_000 + pass.components.attoseconds / 1_000_000_000
                benchmark.measurement(syncMicros, Int(syncNanos / 1000))
                benchmark.measurement(bitmapKiB, bitmapBytes / 1024)
                benchmark.measurement(passMillis, Int(passNanos / 1_000_000))
                benchmark.measurement(ppm, Int(syncNanos * 1_000_000 / max(passNanos, 1)))
            }
        }
    }
}
