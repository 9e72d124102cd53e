import ArgumentParser
import CLISupport
import PCIDiscovery

#if canImport(Glibc)
import Glibc
#endif

/// `devprobe`: which PCI devices of this host can be live-migrated, and why the others cannot.
struct DevProbe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devprobe",
        abstract: "List PCI devices and whether each can be live-migrated, and why not.",
        discussion: """
            Reads devices through libpci (sysfs method) like `lspci -Dnnk`, adds the IOMMU group, \
            driver override, SR-IOV links, NUMA node and VFIO device node, and decides for each \
            device whether Switchover can migrate it. Reasons say what to change.

            Exit status: 0 on success, 1 when the requested device is missing or the tree \
            cannot be read, 2 for bad usage.
            """)

    @Option(
        help: ArgumentHelp(
            "Read a tree laid out like /sys: devices come from <dir>/bus/pci/devices.", valueName: "dir"))
    var sysfsRoot: String?

    @Option(help: ArgumentHelp("Show only this device (DDDD:BB:DD.F, or BB:DD.F for domain 0).", valueName: "address"))
    var device: String?

    @Flag(help: "Show only the devices that can be migrated.")
    var migratable = false

    @Flag(help: "Print a JSON array, one object per device.")
    var json = false

    @Flag(help: "Print one row per device instead of a block.")
    var table = false

    @Flag(
        help: ArgumentHelp(
            "Open each device bound to a VFIO driver and ask the kernel for its migration flags, DMA logging and IOMMU dirty tracking.",
            discussion: "Needs root (or access to /dev/vfio); a device a VM holds cannot be probed. Not with --sysfs-root."))
    var probe = false

    @Option(
        help: ArgumentHelp(
            "Name devices from this pci.ids file (default: libpci's, /usr/share/misc/pci.ids).", valueName: "file"))
    var idsFile: String?

    @Flag(
        help: "Name devices from the ids file alone: no ~/.pciids-cache, no udev hwdb.")
    var deterministicNames = false

    /// The parsed --device.
    private var address: PCIAddress? { device.flatMap { PCIAddress($0) } }

    func validate() throws {
        if let sysfsRoot {
            let devices = (sysfsRoot.hasSuffix("/") ? sysfsRoot : sysfsRoot + "/") + "bus/pci/devices"
            var st = stat()
            guard stat(devices, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
                throw ValidationError("--sysfs-root \(sysfsRoot): \(devices) is not a directory")
            }
        }
        if let device, address == nil {
            throw ValidationError("--device \(device): not a PCI address (expected DDDD:BB:DD.F or BB:DD.F)")
        }
        if json && table {
            throw ValidationError("--json and --table cannot be combined")
        }
        if probe && sysfsRoot != nil {
            throw ValidationError("--probe asks the running kernel and cannot be combined with --sysfs-root")
        }
        if let idsFile, access(idsFile, R_OK) != 0 {
            throw ValidationError("--ids-file \(idsFile): cannot be read")
        }
    }

    func run() throws {
        let options =
            sysfsRoot.map {
                PCIScanOptions(sysfsRoot: $0, idsFile: idsFile, deterministicNames: deterministicNames)
            } ?? PCIScanOptions(idsFile: idsFile, deterministicNames: deterministicNames)
        let scanner = PCIScanner(options: options)
        var devices: [PCIDevice]
        do {
            if let address {
                devices = [try scanner.device(at: address)]
            } else {
                let result = try scanner.scan()
                devices = result.devices
                for entry in result.skipped {
                    Output.error("devprobe: warning: skipped \(options.sysfsPath)/devices/\(entry.name): \(entry.reason)")
                }
            }
        } catch {
            Output.error("devprobe: \(error)")
            throw ExitCode(1)
        }

        let advisor = MigrationAdvisor(handlers: VendorModules.table)
        let prober = probe ? VFIOMigrationProbe() : nil
        var reports = devices.map { device in
            guard VFIODriverCatalog.isVFIODriver(device.driver), let probed = prober?.examine(device) else {
                return DeviceReport(device: device, verdict: advisor.verdict(for: device))
            }
            return DeviceReport(device: device, verdict: advisor.verdict(for: device, probed: probed))
        }
        if migratable { reports = reports.filter(\.verdict.isMigratable) }

        var out = Output()
        if json {
            out.jsonArrayLine(reports.lazy.map(\.json))
        } else if table {
            printTable(reports, into: &out)
        } else {
            for (i, report) in reports.enumerated() {
                if i > 0 { out.line() }
                report.block(into: &out)
            }
        }
        out.flush()
    }

    private func printTable(_ reports: [DeviceReport], into out: inout Output) {
        let rows = [DeviceReport.tableHeader] + reports.map(\.row)
        var widths = [Int](repeating: 0, count: DeviceReport.tableHeader.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        let reasonIndent = String(repeating: " ", count: widths[0] + 2)
        for (index, row) in rows.enumerated() {
            let cells = row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
            }
            out.line(cells.joined(separator: "  "))
            if index > 0 {
                let verdict = reports[index - 1].verdict
                for reason in verdict.reasons { out.line(reasonIndent + "- " + reason) }
                for note in verdict.notes { out.line(reasonIndent + "note: " + note) }
            }
        }
    }
}
