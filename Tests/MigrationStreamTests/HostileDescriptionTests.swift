import MigrationStream
import Testing

/// VMDESCRIPTION trailers and long records a crafted file or a hostile source can carry.
@Suite struct HostileDescriptionTests {
    /// Field sizes whose sum passes Int.max: the body length is unknown (nil), not a trap.
    @Test(arguments: [
        #"{"devices":[{"name":"a","instance_id":0,"fields":[{"size":9223372036854775807},{"size":1}]}]}"#,
        #"{"devices":[{"name":"a","instance_id":0,"fields":[{"size":4611686018427387904,"array_len":1},{"size":4611686018427387904,"array_len":1}]}]}"#,
        #"{"devices":[{"name":"a","instance_id":0,"fields":[{"size":9223372036854775800}],"subsections":[{"vmsd_name":"s","fields":[{"size":10}]}]}]}"#
    ])
    func sizesThatOverflowGiveNoLength(json: String) throws {
        let description = try VMDescription(json: Array(json.utf8))
        #expect(description.devices.count == 1)
        #expect(description.devices[0].bodyLength == nil)
    }

    /// A VMDESCRIPTION that announces 64 MiB and ends: a truncation error naming what is missing.
    /// The reader allocates as the bytes arrive, so the announcement alone costs nothing.
    @Test func aLongRecordThatNeverArrivesIsATruncation() throws {
        let length = 64 << 20
        let reader = StreamReader(source: MemoryByteSource([0x7b, 0x7d]))
        #expect {
            _ = try reader.readBytes(length, "the VMDESCRIPTION JSON")
        } throws: { error in
            guard case StreamError.truncated(let offset, let expected) = error else { return false }
            return offset == 2 && expected == "the VMDESCRIPTION JSON (\(length - 2) more bytes)"
        }
    }
}
