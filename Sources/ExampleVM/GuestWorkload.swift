import Foundation

/// A guest workload that dirties pages at a steady rate while the VM runs: what keeps a
/// live migration iterating. Runs on a thread of its own.
public final class GuestWorkload: @unchecked Sendable {
    // @unchecked: `running`, `thread`, `rng` and `written` are used only under `lock`, an
    // NSCondition (not a Mutex: `stop()` waits on it for the workload thread to end).
    public let pagesPerSecond: Int
    private let ram: GuestRAM
    private let lock = NSCondition()
    private var running = false
    private var thread: Thread?
    private var rng: UInt64

    private var written = 0

    /// Total pages written by the workload so far.
    public var pagesWritten: Int { lock.withLock { written } }

    public init(ram: GuestRAM, pagesPerSecond: Int, seed: UInt64 = 0x5EED) {
        self.ram = ram
        self.pagesPerSecond = max(0, pagesPerSecond)
        self.rng = seed | 1
    }

    public var isRunning: Bool { lock.withLock { running } }

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
