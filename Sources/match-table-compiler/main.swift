// Compiles a vendor module's declarative match table into Swift (run by MatchTablePlugin).
// Usage: match-table-compiler INPUT.matchtable OUTPUT.swift
// A malformed entry fails with "INPUT:LINE: error: REASON", which the build shows as an error.
import DeviceMatch
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: match-table-compiler INPUT.matchtable OUTPUT.swift\n".utf8))
    exit(2)
}
let (input, output) = (arguments[1], arguments[2])

func fail(_ line: Int, _ reason: String) -> Never {
    FileHandle.standardError.write(Data("\(input):\(line): error: \(reason)\n".utf8))
    exit(1)
}

/// The table's bytes, at most `limit` + 1 of them (read with read(2): Foundation's
/// FileHandle.read(upToCount:) leaks its buffer, which LeakSanitizer reports and which would fail
/// every AddressSanitizer build, as this tool runs inside the build).
func readTable(limit: Int) -> [UInt8]? {
    let fd = open(input, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 << 10)
    while bytes.count <= limit {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { return nil }
        if n == 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}

guard let data = readTable(limit: PCIMatchTableFile.maxBytes) else { fail(1, "cannot read the match table") }
guard !data.isEmpty, data.count <= PCIMatchTableFile.maxBytes else {
    fail(1, "the table is empty or larger than \(PCIMatchTableFile.maxBytes) bytes")
}
guard let text = String(validating: data, as: UTF8.self) else { fail(1, "the table is not UTF-8 text") }

let rules: [PCIMatchRule]
do {
    rules = try PCIMatchTableFile.parse(text)
} catch {
    fail(error.line, error.reason)
}
guard !rules.isEmpty else { fail(1, "the table has no rules") }

// devices.matchtable → DevicesMatchTable
let base = URL(fileURLWithPath: input).deletingPathExtension().lastPathComponent
let words = base.split(whereSeparator: { !$0.isLetter && !$0.isNumber })
var typeName = words.map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined() + "MatchTable"
if typeName.first?.isLetter != true { typeName = "Generated" + typeName }

let source = PCIMatchTableFile.swiftSource(for: rules, typeName: typeName, sourceName: URL(fileURLWithPath: input).lastPathComponent)
do {
    try Data(source.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
} catch {
    fail(1, "cannot write \(output): \(error)")
}
