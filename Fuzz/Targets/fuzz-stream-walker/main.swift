import FuzzSupport
import LibFuzzerDriver
import MigrationStream

// What `switchover inspect FILE [--json] [--rewrite OUT]` runs, on a file holding the input:
// the VMDESCRIPTION trailer found from the file's end, the walker over every record, the JSON
// rendering. Then the same bytes once more from memory, handed out in small pieces (every
// split must read the same), with the walker mirroring them through a StreamWriter.
enum Scratch {
    static let file = makeScratchDirectory("inspect") + "/stream"
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    let bytes = Array(data)
    writeFile(Scratch.file, bytes)
    if let inspection = try? StreamInspection.inspect(fileAt: Scratch.file) {
        _ = inspection.json()
        for record in inspection.records { _ = record.body?.description }
    }
    let pieces = [1 + bytes.count % 13, 4096, 3]
    if let walker = try? StreamWalker(
        source: MemoryByteSource(bytes, pieceSizes: pieces),
        mirror: StreamWriter(sink: MemoryByteSink()), bufferSize: 4096)
    {
        _ = try? walker.walk { _ in }
    }
    return 0
}

runLibFuzzer(fuzzOne)
