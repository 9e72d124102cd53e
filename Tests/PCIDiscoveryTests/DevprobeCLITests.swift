import Foundation
import Testing

/// The built `devprobe` binary, end to end.
@Suite("devprobe, end to end")
struct DevprobeCLITests {
    /// Runs devprobe, or records a known issue when this build has no binary.
    func devprobe(_ arguments: [String]) throws -> ProcessResult? {
        guard let path = devprobePath() else {
            print("SKIPPED: the devprobe binary was not found next to the tests (swift build --build-tests builds it)")
            withKnownIssue("devprobe binary missing") { throw CancellationError() }
            return nil
        }
        return try run(path, arguments)
    }

    func fixtureArguments(_ tree: FakeSysfs) throws -> [String] {
        ["--sysfs-root", tree.sysRoot, "--ids-file", try tree.writeIDs(), "--deterministic-names"]
    }

    @Test("--json: one object per device with the documented keys and values")
    func json() throws {
        let tree = try FakeSysfs.standard()
        guard let result = try devprobe(fixtureArguments(tree) + ["--json"]) else { return }
        #expect(result.status == 0)
        #expect(result.stderr == "")
        let array = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(array.count == 8)
        let cx7 = try #require(array.first { $0["address"] as? String == "0000:3b:00.1" })
        #expect(cx7["vendorID"] as? String == "15b3")
        #expect(cx7["deviceID"] as? String == "101e")
        #expect(cx7["classCode"] as? String == "020000")
        #expect(cx7["vendorName"] as? String == "Mellanox Technologies")
        #expect(cx7["deviceName"] as? String == "ConnectX Family mlx5Gen Virtual Function")
        #expect(cx7["driver"] as? String == "mlx5_vfio_pci")
        #expect(cx7["iommuGroup"] as? Int == 42)
        #expect(cx7["migratable"] as? Bool == true)
        #expect(cx7["handler"] as? String == "mlx5")
        #expect((cx7["reasons"] as? [String])?.isEmpty == true)
        #expect(cx7["vfioDeviceNode"] as? String == "/dev/vfio/devices/vfio3")
        #expect(cx7["physicalFunction"] as? String == "0000:3b:00.0")
        let unbound = try #require(array.first { $0["address"] as? String == "0000:d8:00.0" })
        #expect(unbound["driver"] is NSNull)
        #expect(unbound["iommuGroup"] is NSNull)
        #expect(unbound["handler"] is NSNull)
        #expect(unbound["migratable"] as? Bool == false)
        #expect((unbound["reasons"] as? [String])?.count == 3)
        #expect(cx7["p2p"] as? Bool == true)
        #expect(cx7["dirtyTracking"] as? String == "dma-logging")
        #expect(cx7["dirtyTrackingSource"] as? String == "driver-table")
        let pds = try #require(array.first { $0["address"] as? String == "0000:81:00.1" })
        #expect(pds["migratable"] as? Bool == true)
        #expect(pds["migrationFlags"] as? [String] == ["STOP_COPY", "P2P"])
        #expect(pds["notes"] as? [String] == ["no PRE_COPY: all device state moves while the guest is stopped: expect a longer downtime"])
        let hisi = try #require(array.first { $0["address"] as? String == "0000:7d:00.1" })
        #expect(hisi["p2p"] as? Bool == false)
        #expect(hisi["dirtyTracking"] as? String == "none")
        #expect(unbound["p2p"] is NSNull)
        #expect(unbound["dirtyTracking"] is NSNull)
        for object in array {
            for key in [
                "address", "vendorID", "deviceID", "classCode", "vendorName", "deviceName", "driver",
                "iommuGroup", "migratable", "handler", "reasons", "p2p", "dirtyTracking", "dirtyTrackingSource"
            ] {
                #expect(object[key] != nil, "\(key) missing")
            }
        }
    }

    @Test("--migratable shows only those; --device one; the block names the reasons")
    func filters() throws {
        let tree = try FakeSysfs.standard()
        let base = try fixtureArguments(tree)
        guard let migratable = try devprobe(base + ["--migratable", "--table"]) else { return }
        #expect(migratable.status == 0)
        let rows = migratable.stdout.split(separator: "\n").filter { $0.hasPrefix("0000:") }
        #expect(rows.map { String($0.prefix(12)) } == ["0000:3b:00.1", "0000:7d:00.1", "0000:81:00.1"])
        let one = try #require(try devprobe(base + ["--device", "3b:00.2"]))
        #expect(one.status == 0)
        #expect(
            one.stdout.hasPrefix(
                "0000:3b:00.2 Ethernet controller [0200]: Mellanox Technologies ConnectX Family mlx5Gen Virtual Function [15b3:101e]\n"))
        #expect(one.stdout.contains("\tKernel driver in use: vfio-pci\n"))
        #expect(
            one.stdout.contains(
                "\tMIGRATABLE: no\n\t  - bound to vfio-pci, which has no migration support; the variant driver mlx5_vfio_pci serves 15b3:101e: echo mlx5_vfio_pci > /sys/bus/pci/devices/0000:3b:00.2/driver_override"
            ))
    }

    @Test("a stop-copy-only device: migratable, with P2P, dirty tracking and the downtime note")
    func stopCopyOnlyBlock() throws {
        let tree = try FakeSysfs.standard()
        guard let result = try devprobe(fixtureArguments(tree) + ["--device", "81:00.1"]) else { return }
        #expect(result.status == 0)
        #expect(
            result.stdout.hasSuffix(
                """
                \tMIGRATABLE: yes (handler vfio-pci; STOP_COPY, P2P expected from pds_vfio_pci)
                \tP2P: yes
                \tDirty tracking: device DMA logging (expected from pds_vfio_pci)
                \tTracking offered: device DMA logging
                \tNote: no PRE_COPY: all device state moves while the guest is stopped: expect a longer downtime

                """))
        guard let table = try devprobe(fixtureArguments(tree) + ["--table", "--device", "81:00.1"]) else { return }
        let lines = table.stdout.split(separator: "\n")
        #expect(
            lines.first?.split(separator: " ", omittingEmptySubsequences: true)
                == ["ADDRESS", "IDS", "CLASS", "DRIVER", "IOMMU", "MIGRATABLE", "HANDLER", "P2P", "DIRTY", "TRACKING", "DEVICE"])
        #expect(
            lines.dropFirst().first?.split(separator: " ", omittingEmptySubsequences: true).prefix(10)
                == [
                    "0000:81:00.1", "1dd8:1003", "020000", "pds_vfio_pci", "80", "yes", "vfio-pci", "yes", "dma-logging",
                    "device-dma-logging"
                ])
    }

    @Test("exit status 1 when the requested device is missing")
    func missingDevice() throws {
        let tree = try FakeSysfs.standard()
        guard let result = try devprobe(fixtureArguments(tree) + ["--device", "0000:3b:00.7"]) else { return }
        #expect(result.status == 1)
        #expect(result.stdout == "")
        #expect(result.stderr == "devprobe: no device 0000:3b:00.7 in \(tree.sysfsPath)/devices\n")
    }

    @Test(
        "exit status 2 for bad usage",
        arguments: [
            ["--device", "zz:top"], ["--bogus"], ["--sysfs-root", "/nonexistent"], ["--json", "--table"],
            ["--probe", "--sysfs-root", "/"], ["--ids-file", "/nonexistent/pci.ids"], ["--device"]
        ])
    func badUsage(arguments: [String]) throws {
        guard let result = try devprobe(arguments) else { return }
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains("Usage: devprobe"))
        #expect(result.stdout == "")
    }

    @Test("a malformed tree: warnings on stderr, the rest listed, status 0")
    func malformedTree() throws {
        let tree = try FakeSysfs.standard()
        try tree.writeFile("bus/pci/devices/README", "x")
        try tree.write("0000:af:00.0", "vendor", "8086")
        guard let result = try devprobe(fixtureArguments(tree) + ["--json"]) else { return }
        #expect(result.status == 0)
        #expect(
            result.stderr
                == "devprobe: warning: skipped \(tree.sysfsPath)/devices/README: not a PCI address in the kernel's DDDD:BB:DD.F form; ignored\n"
        )
        let array = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        let nic = try #require(array.first { $0["address"] as? String == "0000:af:00.0" })
        #expect((nic["reasons"] as? [String])?.first?.hasPrefix("sysfs: vendor holds \"8086\"") == true)
    }

    @Test("--help documents every option and the exit status")
    func help() throws {
        guard let result = try devprobe(["--help"]) else { return }
        #expect(result.status == 0)
        for text in [
            "--sysfs-root <dir>", "--device <address>", "--migratable", "--json", "--table", "--probe",
            "--ids-file <file>", "--deterministic-names", "2 for bad usage"
        ] {
            #expect(result.stdout.contains(text), "\(text)")
        }
    }

    @Test("run bare on this machine: lists the host's devices")
    func host() throws {
        guard FileManager.default.fileExists(atPath: "/sys/bus/pci/devices") else { return }
        guard let result = try devprobe(["--json"]) else { return }
        #expect(result.status == 0)
        let array = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        let count = try FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices").count
        #expect(array.count == count)
        for object in array where object["migratable"] as? Bool == false {
            #expect((object["reasons"] as? [String])?.isEmpty == false)
        }
    }
}
