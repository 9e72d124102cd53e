// kernel-vfio-check: runs inside the QEMU guest of `make test-kernel` against two mtty-2 mdevs and
// the real VFIO migration uAPI (Debian 6.12, group/container path). Prints `PASS name` /
// `FAIL name: detail` per check and closes with `kernel-vfio: N passed, M failed`.
//
// Usage: kernel-vfio-check SRC_UUID SRC_GROUP DST_UUID DST_GROUP
//        kernel-vfio-check SRC_UUID DST_UUID        (groups read from /sys/bus/mdev/devices/<uuid>/iommu_group)

#if os(Linux)
import Glibc

/// The IOMMU group number of an mdev, from the sysfs link's last component.
func iommuGroup(ofMdev uuid: String) -> Int? {
    var buffer: [CChar] = Array(repeating: 0, count: 4096)
    let n = readlink("/sys/bus/mdev/devices/\(uuid)/iommu_group", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    let target = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return target.split(separator: "/").last.flatMap { Int($0) }
}

func parseDevices(_ arguments: [String]) -> [(uuid: String, group: Int)]? {
    switch arguments.count {
    case 4:
        guard let g0 = Int(arguments[1]), let g1 = Int(arguments[3]) else { return nil }
        return [(arguments[0], g0), (arguments[2], g1)]
    case 2:
        guard let g0 = iommuGroup(ofMdev: arguments[0]), let g1 = iommuGroup(ofMdev: arguments[1]) else { return nil }
        return [(arguments[0], g0), (arguments[1], g1)]
    default:
        return nil
    }
}

func runMain() -> Int32 {
    guard let devices = parseDevices(Array(CommandLine.arguments.dropFirst())) else {
        print("usage: kernel-vfio-check SRC_UUID SRC_GROUP DST_UUID DST_GROUP | SRC_UUID DST_UUID")
        print("FAIL arguments: no two mdevs with their IOMMU groups")
        print("kernel-vfio: 0 passed, 1 failed")
        return 2
    }
    var opened: [KernelVFIODevice] = []
    var report = Report()
    report.run("open-devices") { _ in
        for (uuid, group) in devices {
            do {
                opened.append(try KernelVFIODevice(name: uuid, group: group))
            } catch {
                throw CheckFailure("\(uuid) (group \(group)): \(error)")
            }
        }
    }
    guard opened.count == 2 else {
        print(report.summary)
        return 1
    }
    let result = KernelChecks(source: opened[0], destination: opened[1], report: report).runAll()
    print(result.summary)
    return result.failed == 0 ? 0 : 1
}

exit(runMain())
#else
print("kernel-vfio-check talks to the Linux VFIO uAPI: it runs on Linux only")
#endif
