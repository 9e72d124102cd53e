/// A small example VM for demos, tests and benchmarks: guest RAM migrated by a ``RAMHandler``
/// and a workload that dirties it while the VM runs.
public final class ExampleVM: Sendable {
    public let ram: GuestRAM
    public let workload: GuestWorkload
    public let ramHandler: RAMHandler

    /// - Parameters:
    ///   - memoryBytes: guest RAM, split into "pc.ram" and a 256 KiB "pc.bios" block as a PC has.
    ///   - dirtyPagesPerSecond: the workload's rate while running.
    ///   - seed: the seed of the boot content and of the workload's page choices.
    public init(memoryBytes: Int, dirtyPagesPerSecond: Int, seed: UInt64 = 0x5EED) throws {
        let bios = 256 << 10
        let main = max(GuestRAM.pageSize, (memoryBytes - bios) / GuestRAM.pageSize * GuestRAM.pageSize)
        ram = try GuestRAM(layout: [RAMBlockLayout(name: "pc.ram", size: main), RAMBlockLayout(name: "pc.bios", size: bios)])
        workload = GuestWorkload(ram: ram, pagesPerSecond: dirtyPagesPerSecond, seed: seed)
        ramHandler = RAMHandler(ram: ram)
        // Boot content: every eighth page written, the rest zero (as a fresh guest's RAM is mostly zero).
        for page in stride(from: 0, to: ram.pageCount(block: 0), by: 8) {
            ram.guestWrite(block: 0, page: page, seed: seed &+ UInt64(page))
        }
    }

    public var isRunning: Bool { workload.isRunning }

    /// Starts or resumes the guest.
    public func resume() { workload.start() }

    /// Pauses the guest; no page changes after this returns.
    public func stop() { workload.stop() }
}
