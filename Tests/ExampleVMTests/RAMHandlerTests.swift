import ExampleVM
import Foundation
import MigrationCore
import MigrationStream
import Testing

final class StubContext: SaveContext, LoadContext, @unchecked Sendable {
    let identity = RAMHandler.identity
    var switchoverAckEnabled: Bool { false }
    var multifdTransfer: Bool { false }
    var vmRunning: Bool { true }
    func approveSwitchover() throws {}
    func revokeSwitchover() throws {}
}

@Suite struct RAMHandlerTests {
    /// Runs setup, `parts` iterations and completion into one byte array of framed sections.
    static func save(_ vm: ExampleVM, parts: Int) throws -> [UInt8] {
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        let ctx = StubContext()
        let id = RAMHandler.identity
        try w.writeSectionHeader(SectionHeader(kind: .start, sectionID: 2, idstr: id.idstr, instanceID: 0, versionID: 4))
        try vm.ramHandler.saveSetup(to: w, context: ctx)
        try w.writeFooter(sectionID: 2)
        for _ in 0..<parts {
            try w.writeSectionHeader(SectionHeader(kind: .part, sectionID: 2, idstr: id.idstr, instanceID: 0, versionID: 4))
            _ = try vm.ramHandler.saveIterate(to: w, context: ctx)
            try w.writeFooter(sectionID: 2)
        }
        try w.writeSectionHeader(SectionHeader(kind: .end, sectionID: 2, idstr: id.idstr, instanceID: 0, versionID: 4))
        try vm.ramHandler.saveComplete(to: w, context: ctx)
        try w.writeFooter(sectionID: 2)
        try w.flush()
        return sink.bytes
    }

    static func load(_ bytes: [UInt8], into vm: ExampleVM, pieces: [Int] = []) throws {
        let reader = StreamReader(source: MemoryByteSource(bytes, pieceSizes: pieces))
        while try !reader.isAtEnd() {
            guard case .section(let header) = try reader.readRecord() else {
                Issue.record("not a section")
                return
            }
            try vm.ramHandler.loadState(from: reader, header: header, context: StubContext())
            try reader.readFooter(sectionID: header.sectionID)
        }
    }

    @Test func pagesArriveByteIdenticalWhateverTheSplitting() throws {
        let source = try ExampleVM(memoryBytes: 4 << 20, dirtyPagesPerSecond: 0)
        let bytes = try Self.save(source, parts: 3)
        for pieces in [[], [1], [7, 4096, 13]] {
            let dest = try ExampleVM(memoryBytes: 4 << 20, dirtyPagesPerSecond: 0, seed: 99)
            #expect(dest.ram.digest() != source.ram.digest())
            try Self.load(bytes, into: dest, pieces: pieces)
            #expect(dest.ram.digest() == source.ram.digest())
        }
    }

    @Test func zeroPagesTravelAsOneByteRecords() throws {
        let vm = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 0)
        let bytes = try Self.save(vm, parts: 0)
        let pages = vm.ram.totalBytes / GuestRAM.pageSize
        let written = (vm.ram.pageCount(block: 0) + 7) / 8
        // Each written page costs 8 + 4096 bytes, each zero page 8 + 1, plus names, headers, EOS.
        #expect(bytes.count < written * 4104 + (pages - written) * 9 + 200)
        #expect(bytes.count > written * 4104)
    }

    @Test func startSectionListsTheBlocksAsQEMUDoes() throws {
        let vm = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 0)
        let sink = MemoryByteSink()
        let w = StreamWriter(sink: sink)
        try vm.ramHandler.saveSetup(to: w, context: StubContext())
        try w.flush()
        let total = UInt64(vm.ram.totalBytes) | RAMHandler.Flag.memSize
        var expected = (0..<8).map { UInt8(truncatingIfNeeded: total >> (56 - 8 * UInt64($0))) }
        expected += [6] + Array("pc.ram".utf8) + [0, 0, 0, 0, 0, 0x0c, 0, 0]
        expected += [7] + Array("pc.bios".utf8) + [0, 0, 0, 0, 0, 0x04, 0, 0]
        expected += [0, 0, 0, 0, 0, 0, 0, 0x10]
        #expect(sink.bytes == expected)
    }

    @Test func aForeignBlockLayoutIsRefused() throws {
        let source = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 0)
        let bytes = try Self.save(source, parts: 0)
        let dest = try ExampleVM(memoryBytes: 2 << 20, dirtyPagesPerSecond: 0)
        #expect(throws: ExampleVMError.self) { try Self.load(bytes, into: dest) }
    }

    @Test func workloadDirtiesPagesOnlyWhileRunning() throws {
        let vm = try ExampleVM(memoryBytes: 1 << 20, dirtyPagesPerSecond: 20_000)
        _ = try vm.ram.takeDirtyPages(max: .max) { _, _, _ in }
        #expect(vm.ram.dirtyPages == 0)
        vm.resume()
        while vm.workload.pagesWritten == 0 { Thread.sleep(forTimeInterval: 0.001) }
        vm.stop()
        let dirty = vm.ram.dirtyPages
        #expect(dirty > 0)
        let digest = vm.ram.digest()
        #expect(vm.ram.digest() == digest)
        #expect(vm.ram.dirtyPages == dirty)
    }
}
