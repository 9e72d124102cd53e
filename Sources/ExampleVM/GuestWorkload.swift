import Foundation

/// A guest workload that dirties pages at a steady rate while the VM runs: what keeps a
/// live migration iterating. Runs on a thread of its own.
///
/// Device DMA (``addDeviceDMA(name:pagesPerSecond:write:)``) runs on the same thread: the guest's
/// driver keeps each device writing guest pages (a NIC receiving into its buffers) while the
/// guest runs. So no DMA write lands once ``stop()`` has returned, which the run state calls
/// when the vCPUs stop, before any device stops: the final dirty sync sees every write.
public final class GuestWorkload: @unchecked Sendable {
    // @unchecked: `running`, `thread`, `rng`, `written` and `dma` are used only under `lock`, an
    // NSCondition (not a Mutex: `stop()` blocks until the workload thread has ended, and the
    // thread sleeps between ticks on a timed wait that `stop()` interrupts: a Mutex can do neither).
    public let pagesPerSecond: Int
    private let ram: GuestRAM
    private let lock = NSCondition()
    private var running = false
    private var thread: Thread?
    private var rng: UInt64

    private var written = 0
    private var dma: [DeviceDMA] = []

    /// A device writing guest pages by DMA: `write(guestAddress, seed)` per page.
    private struct DeviceDMA {
        var name: String
        var pagesPerSecond: Int
        var write: @Sendable (_ guestAddress: UInt64, _ seed: UInt64) throws -> Void
        var pages = 0
        var failure: String?
    }

    /// Total pages written by the workload so far.
    public var pagesWritten: Int { lock.withLock { written } }

    public init(ram: GuestRAM, pagesPerSecond: Int, seed: UInt64 = 0x5EED) {
        self.ram = ram
        self.pagesPerSecond = max(0, pagesPerSecond)
        self.rng = seed | 1
    }

    public var isRunning: Bool { lock.withLock { running } }

    /// Makes the device `name` write `pagesPerSecond` pages of guest RAM by DMA while the guest
    /// runs, each through `write(guestAddress, seed)` (the device's DMA path). A write that
    /// throws stops that device's DMA; ``deviceDMA`` reports it.
    public func addDeviceDMA(
        name: String, pagesPerSecond: Int, write: @escaping @Sendable (_ guestAddress: UInt64, _ seed: UInt64) throws -> Void
    ) {
        lock.withLock { dma.append(DeviceDMA(name: name, pagesPerSecond: max(0, pagesPerSecond), write: write)) }
    }

    /// Per DMA device: pages written so far, and why its DMA stopped (nil while it works).
    public var deviceDMA: [DeviceDMAReport] {
        lock.withLock { dma.map { DeviceDMAReport(name: $0.name, pages: $0.pages, failure: $0.failure) } }
    }

    /// Starts (or resumes) dirtying memory.
    public func start() {
        lock.withLock {
            guard !running else { return }
            running = true
            let t = Thread { [weak self] in self?.loop() }
            t.name = "guest-workload"
            thread = t
            t.start()
        }
    }

    /// Stops dirtying memory and waits until no write is in flight.
    public func stop() {
        lock.withLock {
            running = false
            lock.broadcast()
            while thread != nil { lock.wait() }
        }
    }

    /// One 10 ms tick of every device's DMA: pages anywhere in guest RAM.
    private func deviceDMATick() {
        let devices = lock.withLock { dma.indices.filter { dma[$0].failure == nil && dma[$0].pagesPerSecond > 0 } }
        guard !devices.isEmpty else { return }
        let totalPages = UInt64(ram.totalBytes / GuestRAM.pageSize)
        for index in devices {
            let (write, perTick) = lock.withLock { (dma[index].write, max(1, dma[index].pagesPerSecond / 100)) }
            var done = 0
            var failure: String?
            for _ in 0..<perTick {
                let seed = lock.withLock {
                    rng ^= rng << 13
                    rng ^= rng >> 7
                    rng ^= rng << 17
                    return rng
                }
                do {
                    try write((seed >> 12) % totalPages * UInt64(GuestRAM.pageSize), seed)
                    done += 1
                } catch {
                    failure = "\(error)"
                    break
                }
            }
            lock.withLock {
                dma[index].pages += done
                if let failure { dma[index].failure = failure }
            }
        }
    }

    private func loop() {
        // 10 ms ticks: each writes pagesPerSecond/100 pages (at least one when the rate is set).
        let perTick = pagesPerSecond == 0 ? 0 : max(1, pagesPerSecond / 100)
        while true {
            let keepGoing: Bool = lock.withLock { running }
            if !keepGoing { break }
            for _ in 0..<perTick {
                rng ^= rng << 13
                rng ^= rng >> 7
                rng ^= rng << 17
                let block = Int(rng % UInt64(ram.layout.count))
                let page = Int((rng >> 16) % UInt64(ram.pageCount(block: block)))
                ram.guestWrite(block: block, page: page, seed: rng)
            }
            deviceDMATick()
            lock.withLock {
                written += perTick
                if running { _ = lock.wait(until: Date().addingTimeInterval(0.01)) }
            }
        }
        lock.withLock {
            thread = nil
            lock.broadcast()
        }
    }
}

/// What one device wrote into guest RAM by DMA (``GuestWorkload/deviceDMA``).
public struct DeviceDMAReport: Sendable, Hashable {
    /// The device's address.
    public var name: String
    /// Pages written.
    public var pages: Int
    /// Why its DMA stopped early (a faulting write), or nil.
    public var failure: String?
}
