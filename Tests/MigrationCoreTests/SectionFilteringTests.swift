import Foundation
import MigrationCore
import MigrationStream
import Testing

/// The filters that cut a foreign stream down to the sections this destination has handlers for:
/// SectionFilteringConnection (live, over a socket) agrees byte for byte with SectionSelection (a
/// file) on QEMU 7.2's q35 file, up to EOF.
@Suite struct SectionFilteringTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("MigrationStreamTests/Fixtures/qemu72-q35-booted.mig").path

    /// Everything `connection` yields until its end, read in `piece`-byte reads.
    static func drain(_ connection: any MigrationConnection, piece: Int = 4096) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: piece)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try connection.read(into: $0) }
            if n == 0 { return out }
            out += buffer[..<n]
        }
    }

    /// The fixture written into one end of a socket pair (then closed), filtered on the other.
    static func filtered(keep: @escaping @Sendable (String, UInt32) -> Bool, bytes: [UInt8]) throws -> (
        [UInt8], SectionFilteringConnection
    ) {
        let (source, destination) = try DescriptorConnection.socketPair()
        let writer = Thread {
            try? bytes.withUnsafeBytes { try source.write($0) }
            source.close()
        }
        writer.start()
        let filter = SectionFilteringConnection(base: destination, keep: keep)
        filter.setTimeouts(read: .seconds(60), write: .seconds(60))
        let out = try drain(filter)
        filter.close()
        return (out, filter)
    }

    @Test func theLiveFilterPassesOnWhatTheFilePlanKeeps() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture)))
        let plan = try SectionSelection(fileAt: Self.fixture) { idstr, _ in idstr == "ram" }
        var expected: [UInt8] = []
        for range in plan.ranges { expected += bytes[range] }
        let (out, filter) = try Self.filtered(keep: { idstr, _ in idstr == "ram" }, bytes: bytes)
        // Everything after EOF passes as it came, so the two agree to the end.
        #expect(out.count == expected.count)
        #expect(out == expected)
        #expect(filter.keptSections == ["ram"])
        let skipped = filter.skippedBytes
        #expect(skipped["timer"] != nil && skipped["cpu"] != nil)
        #expect(skipped.values.reduce(0, +) + out.count == bytes.count)
    }

    @Test func aStreamTheWalkerCannotFollowEndsWithATypedError() throws {
        var broken = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture)))
        broken[4] ^= 0xff  // the file header's version
        let bytes = broken
        let (source, destination) = try DescriptorConnection.socketPair()
        let writer = Thread {
            try? bytes.withUnsafeBytes { try source.write($0) }
            source.close()
        }
        writer.start()
        let filter = SectionFilteringConnection(base: destination) { _, _ in true }
        filter.setTimeouts(read: .seconds(60), write: .seconds(60))
        #expect(throws: StreamError.self) { _ = try Self.drain(filter) }
        filter.close()
    }
}
