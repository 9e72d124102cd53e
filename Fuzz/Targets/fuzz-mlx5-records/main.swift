import FuzzSupport
import LibFuzzerDriver
import MLX5Handler

// The mlx5 record stream parser (what the mlx5 handler runs over every byte of a device's
// state on both ends): the first byte picks the piece size, the rest is the record stream;
// a second parser with a small record limit sees the same bytes in one piece.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    let piece = Int(input.byte() % 32) + 1
    let stream = input.rest()
    var parser = MLX5RecordParser()
    stream.withUnsafeBytes { all in
        var at = 0
        while at < all.count {
            let end = min(all.count, at + piece)
            guard (try? parser.consume(UnsafeRawBufferPointer(rebasing: all[at..<end]))) != nil else { return }
            at = end
        }
    }
    _ = parser.isAtRecordBoundary
    var small = MLX5RecordParser(recordLimit: 64)
    _ = stream.withUnsafeBytes { try? small.consume($0) }
    return 0
}

runLibFuzzer(fuzzOne)
