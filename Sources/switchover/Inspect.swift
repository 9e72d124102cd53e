import ArgumentParser
import MigrationStream

/// `switchover inspect FILE`: every record of a migration stream file, its body summary,
/// optionally as JSON or written back out through the stream writer.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every section, command and the trailer of a migration stream file.",
        discussion: """
            Each line gives the record's offset (hex), kind, section id, idstr, instance id, version id \
            and body length; ram and vfio sections also get a summary of their contents. A malformed \
            file gets one error line naming the byte offset and what was expected, and exit status 1.
            """
    )

    @Argument(help: "The migration stream file (QEMU savevm v3, e.g. from migrate \"exec:cat > FILE\").")
    var file: String

    @Flag(help: "Print one JSON object {\"version\", \"machine\", \"records\": [...]} instead of a table.")
    var json = false

    @Option(
        help: ArgumentHelp("Write the parsed stream back out to OUT (byte-identical for a well-formed stream).", valueName: "OUT"))
    var rewrite: String?

    func run() throws {
        do {
            var printedColumns = false
            let inspection = try StreamInspection.inspect(fileAt: file, rewritingTo: rewrite) { record in
                guard !json else { return }
                if !printedColumns {
                    print(Self.columns)
                    printedColumns = true
                }
                print(Self.row(record))
            }
            if json {
                print(inspection.json())
            } else {
                print("\(inspection.records.count) records; machine \(inspection.configuration.machineType); savevm version 3")
            }
        } catch let error as StreamError {
            Self.fail("\(file): \(error)")
        } catch let error as ByteIOError {
            Self.fail("\(file): \(error)")
        }
    }

    private static func fail(_ message: String) -> Never {
        var standardError = StandardError()
        print("switchover inspect: \(message)", to: &standardError)
        Inspect.exit(withError: ExitCode(1))
    }

    static let columns =
        pad("OFFSET", 10) + pad("KIND", 14) + pad("ID", 5, right: true) + "  " + pad("IDSTR", 28)
        + pad("INST", 5, right: true) + pad("VER", 5, right: true) + pad("BODY", 10, right: true) + "  SUMMARY"

    static func row(_ r: InspectedRecord) -> String {
        let hex = String(r.offset, radix: 16)
        var line = pad(String(repeating: "0", count: max(0, 8 - hex.count)) + hex, 10)
        line += pad(r.kind.rawValue, 14)
        line += pad(r.sectionID.map { String($0) } ?? "", 5, right: true) + "  "
        line += pad(r.idstr ?? r.command?.name ?? "", 28)
        line += pad(r.instanceID.map { String($0) } ?? "", 5, right: true)
        line += pad(r.versionID.map { String($0) } ?? "", 5, right: true)
        line += pad(r.bodyLength.map { String($0) } ?? "", 10, right: true)
        if let summary = r.body?.description ?? r.command.map(commandSummary) {
            line += "  " + summary
        }
        while line.last == " " { line.removeLast() }
        return line
    }

    private static func commandSummary(_ c: MigrationCommand) -> String {
        switch c {
        case .ping(let v): "value \(v)"
        case .packaged(let n): "\(n) packaged bytes follow"
        case .recvBitmap(let block): "block \(block)"
        case .switchoverHello(let version, let features): "version \(version), features 0x\(String(features, radix: 16))"
        default: "id \(c.id)"
        }
    }

    private static func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return right ? fill + s : s + fill + (s.count >= width ? " " : "")
    }
}

/// Standard error as a `TextOutputStream`.
struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            try? FileDescriptorByteSink(fd: 2).write(UnsafeRawBufferPointer(buffer))
        }
    }
}
