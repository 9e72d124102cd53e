import SystemPackage
import Testing

@testable import VFIO

extension VFIOMigrationDataFD {
    /// One read of at most `count` bytes: the result and the bytes read.
    func readChunk(_ count: Int) throws(VFIOError) -> (result: VFIODataReadResult, bytes: [UInt8]) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 8)
        defer { buffer.deallocate() }
        let result = try read(into: buffer)
        if case .bytes(let n) = result { return (result, Array(buffer[0..<n])) }
        return (result, [])
    }

    /// Reads until the read no longer returns bytes, in chunks of `chunk`; returns the bytes and how it stopped.
    func drain(chunk: Int = 1 << 20) throws(VFIOError) -> (bytes: [UInt8], end: VFIODataReadResult) {
        var bytes: [UInt8] = []
        while true {
            let (result, data) = try readChunk(chunk)
            if case .bytes = result {
                bytes += data
            } else {
                return (bytes, result)
            }
        }
    }
}

/// The errno of a failed call, for `#expect(errnoOf { ... } == .EINVAL)`.
func errnoOf<T>(_ body: () -> Result<T, Errno>) -> Errno? {
    if case .failure(let errno) = body() { return errno }
    return nil
}
