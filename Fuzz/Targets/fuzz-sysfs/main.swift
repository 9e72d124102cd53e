import FuzzSupport
import LibFuzzerDriver

@testable import PCIDiscovery

#if canImport(Glibc)
import Glibc
#endif

// PCIDiscovery's sysfs readers (what devprobe runs on every device of a tree it is given with
// --sysfs-root) over one device directory written from the input: for each entry below, a
// byte picks what it is (absent, a file, a symbolic link, a directory, a FIFO) and a
// length-prefixed part gives its content (a link's target; a directory's entry names,
// separated by '/'). Then every DeviceAttributeReader query, and a whole PCIScanner scan of
// the tree (libpci reading the same attributes).
/// The tree: `root/bus/pci/devices/<address>` (a real directory, rebuilt for each input) and
/// the directories the kernel's relative links point into.
enum Tree {
    static let root: String = {
        let root = makeScratchDirectory("sysfs")
        for dir in [
            "/bus", "/bus/pci", "/bus/pci/devices", "/bus/pci/drivers", "/bus/pci/drivers/vfio-pci",
            "/kernel", "/kernel/iommu_groups", "/kernel/iommu_groups/7", "/devices"
        ] {
            mkdir(root + dir, 0o755)
        }
        return root
    }()
    static let device = root + "/bus/pci/devices/0000:00:01.0"
    static let entries = [
        "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision", "driver_override",
        "numa_node", "sriov_numvfs", "driver", "iommu_group", "physfn", "virtfn0", "virtfn1", "virtfn2",
        "vfio-dev", "config"
    ]
}

/// Removes `path` and everything under it (a tree this target made: no links are followed).
func remove(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if st.st_mode & S_IFMT == S_IFDIR {
        if let d = opendir(path) {
            var names: [String] = []
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(d)
            for name in names { remove(path + "/" + name) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    let device = Tree.device
    remove(device)
    mkdir(device, 0o755)
    for name in Tree.entries {
        let kind = input.byte() % 5
        let length = Int(input.byte()) << 8 | Int(input.byte())
        let content = input.take(min(length, 5000))
        let path = device + "/" + name
        switch kind {
        case 1:
            writeFile(path, content)
        case 2:
            let target = String(decoding: content.prefix { $0 != 0 }, as: UTF8.self)
            symlink(target.isEmpty ? "." : target, path)
        case 3:
            mkdir(path, 0o755)
            let names = content.split(separator: UInt8(ascii: "/")).prefix(8)
            for n in names where n.count < 200 && !n.contains(0) && n != [0x2e] && n != [0x2e, 0x2e] {
                mkdir(path + "/" + String(decoding: n, as: UTF8.self), 0o755)
            }
        case 4:
            mkfifo(path, 0o644)
        default:
            break
        }
    }
    if let dir = try? SysfsDirectory(path: device) {
        var reader = DeviceAttributeReader(dir: dir)
        _ = reader.identity()
        _ = reader.driver()
        _ = reader.iommuGroup()
        _ = reader.driverOverride()
        _ = reader.numaNode()
        _ = reader.physicalFunction()
        _ = reader.virtualFunctions()
        _ = reader.vfioCdevName()
        _ = reader.problems
    }
    let scanner = PCIScanner(options: PCIScanOptions(sysfsPath: Tree.root + "/bus/pci", deterministicNames: true, lookUpNames: false))
    if let result = try? scanner.scan() {
        for d in result.devices { _ = d.problems }
    }
    return 0
}

runLibFuzzer(fuzzOne)
