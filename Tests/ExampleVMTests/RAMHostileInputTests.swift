import ExampleVM
import MigrationCore
import MigrationStream
import Testing

/// RAM records a hostile source (or a crafted file for `switchover incoming`) can send.
@Suite struct RAMHostileInputTests {
    private func section(_ body: (StreamWriter) throws -> Void) throws -> [UInt8] {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        let id = RAMHandler.identity
        try w.writeSectionHeader(SectionHeader(kind: .start, sectionID: 2, idstr: id.idstr, instanceID: 0, versionID: 4))
        try body(w)
        try w.writeFooter(sectionID: 2)
        try w.flush()
        return sink.bytes
    }

    private func loadError(_ bytes: [UInt8], into vm: ExampleVM) -> ExampleVMError? {
        do {
            try RAMHandlerTests.load(bytes, into: vm)
            return nil
        } catch let error as ExampleVMError {
            return error
        } catch {
            Issue.record("not an ExampleVMError: \(error)")
            return nil
        }
    }

    /// A page word of 0xFFFFFFFFFFFFF008: address + page size overflowed (a trap, the process
    /// died); it is a page outside the block.
    @Test(arguments: [UInt64(0xFFFF_FFFF_FFFF_F000), 0xFFFF_FFFF_FFFF_E000, 1 << 40])
    func aPageAddressNearTheTopOfTheRangeIsOutsideTheBlock(address: UInt64) throws {
        let vm = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 0)
        let bytes = try section { w in
            try w.writeBE64(address | RAMHandler.Flag.page)
            try w.writeCountedString(vm.ram.layout[0].name)
            try w.writeBytes([UInt8](repeating: 1, count: GuestRAM.pageSize))
            try w.writeBE64(RAMHandler.Flag.eos)
        }
        let error = try #require(loadError(bytes, into: vm))
        guard case .badRAMSection(let offset, let reason) = error else {
            Issue.record("\(error)")
            return
        }
        #expect(offset == 17)  // the page word, right after the 17-byte START header of "ram"
        #expect(reason.contains("outside block"))
    }
}
