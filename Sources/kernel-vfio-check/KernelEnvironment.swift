// What only the guest has: the two mtty mdevs opened through the group/container path (Debian's 6.12
// has no iommufd) and guest writes to their BARs. (The child process with a deadline for the one request
// that hangs kernels without the STOP_COPY→PRE_COPY fix is in ChildProcesses.swift.)

#if os(Linux)
import Glibc
import VFIO

/// One mdev the guest created: its UUID and, when given on the command line, its IOMMU group.
struct MdevArgument {
    var uuid: String
    var group: Int?
}

enum KernelEnvironment {
    /// How long the one request that spins forever in kernels without the STOP_COPY→PRE_COPY fix may
    /// take (asked from a child: DeadlineChild).
    static let guardedRequestLimit: Duration = .seconds(20)

    /// `SRC SRC_GROUP DST DST_GROUP` or `SRC DST` (groups then come from sysfs when the device is opened).
    static func parseDevices(_ arguments: [String]) -> [MdevArgument]? {
        switch arguments.count {
        case 4:
            guard let g0 = Int(arguments[1]), let g1 = Int(arguments[3]) else { return nil }
            return [MdevArgument(uuid: arguments[0], group: g0), MdevArgument(uuid: arguments[2], group: g1)]
        case 2:
            return [MdevArgument(uuid: arguments[0]), MdevArgument(uuid: arguments[1])]
        default:
            return nil
        }
    }

    /// Opens an mdev through /dev/vfio/vfio and /dev/vfio/<group>.
    static func open(_ uuid: String) throws(VFIOError) -> KernelVFIODevice {
        try KernelVFIODevice.open(.mdev(uuid), access: .group)
    }

    /// The mtty port registers a guest writes (16550 UART offsets inside an 8-byte I/O BAR per port).
    enum UART {
        static let transmit: UInt64 = 0
        static let lineControl: UInt64 = 3
    }

    /// Writes bytes one at a time into a register of a port's BAR, as the guest's port I/O would.
    static func guestWrite(_ device: KernelVFIODevice, port: UInt32, register: UInt64, bytes: [UInt8], _ c: inout VFIOCheck) {
        for byte in bytes {
            c.expectSuccess(
                device.writeRegion(port, offset: register, bytes: [byte]), "write 0x\(String(byte, radix: 16)) to BAR\(port)+\(register)")
        }
    }

    static func bytes(fromHex text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var index = 0
        while index < digits.count {
            guard let byte = UInt8(String(decoding: digits[index..<(index + 2)], as: UTF8.self), radix: 16) else { return nil }
            out.append(byte)
            index += 2
        }
        return out
    }
}
#endif
