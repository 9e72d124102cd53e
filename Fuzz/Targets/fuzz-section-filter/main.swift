import Foundation
import FuzzSupport
import LibFuzzerDriver
import MigrationCore
import MigrationStream

// What a destination that loads only some sections reads from a foreign (QEMU) source: the
// input is a stream file or a live stream, after one mode byte. Every input goes through both
// paths:
// - a file: SectionSelection plans it from its VMDESCRIPTION, then SelectedFileTransport's
//   connection reads the plan back (it must yield exactly the planned bytes, then end);
// - a live stream: SectionFilteringConnection walks the bytes on its own thread (read by the
//   base connection in pieces of the mode's size) while this thread drains what it passes on,
//   with a read deadline; the connection is closed and the walker thread must let go of the
//   base connection within 10 s (its thread ended), or the input is a hang.
// Mode byte: bits 0-1 choose which sections are kept (all, none, the VFIO ones, by parity of
// the idstr's length and instance id); bits 2-4 the piece size; bit 5 reads the filtered stream
// in 1-byte reads instead of 4 KiB ones; bit 6 closes the filter after the first read.

/// Whether a section is kept, by the mode.
func keeper(_ mode: UInt8) -> @Sendable (String, UInt32) -> Bool {
    switch mode & 3 {
    case 0: return { _, _ in true }
    case 1: return { _, _ in false }
    case 2: return { idstr, _ in idstr.hasSuffix("/vfio") || idstr.contains("vfio") }
    default: return { idstr, instance in (idstr.utf8.count + Int(instance)) % 2 == 0 }
    }
}

/// Reads `connection` to its end or first error; the bytes read.
func drain(_ connection: any MigrationConnection, piece: Int, stopAfterFirst: Bool = false) -> Int {
    var total = 0
    var buffer = [UInt8](repeating: 0, count: piece)
    while true {
        let n: Int
        do {
            n = try buffer.withUnsafeMutableBytes { try connection.read(into: $0) }
        } catch {
            return total
        }
        if n == 0 { return total }
        total += n
        if stopAfterFirst { return total }
    }
}

enum Scratch {
    static let file = makeScratchDirectory("section-filter") + "/stream.mig"
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    let mode = input.byte()
    let stream = input.rest()
    let keep = keeper(mode)
    let readPiece = mode & 0x20 != 0 ? 1 : 4096

    // The file.
    writeFile(Scratch.file, stream)
    if let selection = try? SectionSelection(fileAt: Scratch.file, keep: keep) {
        _ = (selection.kept, selection.skipped, selection.configuration)
        for range in selection.ranges where range.lowerBound < 0 || range.upperBound > stream.count {
            fatalError("SectionSelection planned \(range) of a \(stream.count)-byte file")
        }
        let transport = SelectedFileTransport(path: Scratch.file, selection: selection)
        if let listener = try? transport.listen(), let connection = try? listener.accept() {
            connection.setTimeouts(read: .seconds(5), write: .seconds(5))
            let read = drain(connection, piece: readPiece)
            connection.close()
            listener.close()
            guard read == selection.keptBytes else {
                fatalError("SelectedFileTransport yielded \(read) bytes of a \(selection.keptBytes)-byte plan")
            }
        }
    }

    // The live stream.
    let pieceSizes = [0, 1, 7, 64, 4096, 65537, 3, 1 << 20]
    var base: MemoryConnection? = MemoryConnection(stream, pieceSize: pieceSizes[Int(mode >> 2) & 7], supportsReturnPath: true)
    weak let weakBase = base
    var filter: SectionFilteringConnection? = SectionFilteringConnection(base: base!, keep: keep)
    base = nil
    filter!.setTimeouts(read: .seconds(5), write: .seconds(5))
    _ = drain(filter!, piece: readPiece, stopAfterFirst: mode & 0x40 != 0)
    _ = (filter!.skippedBytes, filter!.keptSections, filter!.description)
    filter!.close()
    filter = nil
    // The walker thread holds the base connection until it returns: wait for it to let go.
    let deadline = ContinuousClock.now + .seconds(10)
    while weakBase != nil {
        guard ContinuousClock.now < deadline else { fatalError("the section-filter thread did not end") }
        usleep(50)
    }
    return 0
}

runLibFuzzer(fuzzOne)
