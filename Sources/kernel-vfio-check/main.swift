// kernel-vfio-check: runs inside the QEMU guest of `make test-kernel` against two mtty-2 mdevs and the
// real VFIO migration uAPI (Debian 6.12, group/container path), through the project's VFIO module:
//
//  1. opens both devices with KernelVFIODevice (group path);
//  2. runs VFIOBehaviourChecks, the suite VFIOTests also runs against the simulator;
//  3. checks the device lifecycle: the P2P barrier of a run-state stop and start across both devices,
//     and adopting an already-open device fd (LifecycleChecks.swift);
//  3b. asks what the kernel answers for DMA logging and type1 dirty tracking, and checks the engine's
//     choice and blocker against those answers (DirtyTrackingChecks.swift);
//  4. migrates the source into the destination with the generic VFIO-PCI handler on both ends, through
//     MigrationCore's source and destination engines in two processes over a Unix socket, switchover-ack
//     on, and compares the destination's state read back out with the source's.
//
// Prints `PASS name` / `FAIL name: detail` per check and closes with `kernel-vfio: N passed, M failed`;
// exits non-zero on any failure.
//
// Usage: kernel-vfio-check SRC_UUID SRC_GROUP DST_UUID DST_GROUP
//        kernel-vfio-check SRC_UUID DST_UUID        (groups from /sys/bus/mdev/devices/<uuid>/iommu_group)
//        kernel-vfio-check --role source|destination …   (the migration's child processes)

#if os(Linux)
import Glibc
import KernelTestSupport
import VFIO

func runChecks(_ arguments: [String]) -> Int32 {
    guard let mdevs = KernelEnvironment.parseDevices(arguments) else {
        KernelTestSupport.printLine("usage: kernel-vfio-check SRC_UUID SRC_GROUP DST_UUID DST_GROUP | SRC_UUID DST_UUID")
        KernelTestSupport.printLine("FAIL arguments: no two mdevs")
        KernelTestSupport.printLine("kernel-vfio: 0 passed, 1 failed")
        return 2
    }
    var report = VFIOCheckReport(output: KernelTestSupport.printLine)
    var devices: [KernelVFIODevice] = []
    report.run(KernelCheck.openDevices.name) { _ in
        for mdev in mdevs {
            do {
                devices.append(try KernelEnvironment.open(mdev.uuid))
            } catch {
                throw VFIOCheckAbort("\(error)")
            }
        }
    }
    guard devices.count == 2 else {
        KernelTestSupport.printLine(report.summary())
        return 1
    }
    let source = devices[0]
    let destination = devices[1]
    report.run(KernelCheck.groupContainerPath.name) { c in
        for (device, mdev) in zip(devices, mdevs) {
            guard case .group(let number, let noIOMMU) = device.openPath else {
                c.expect(false, "\(device.name) opened through \(device.openPath), not the group")
                continue
            }
            c.expect(!noIOMMU, "\(device.name) opened through a no-IOMMU group")
            if let group = mdev.group { c.expectEqual(number, group, "\(device.name) IOMMU group") }
            let status = device.groupStatusBeforeContainer.map { String($0) } ?? "-"
            c.note("\(device.name): group \(number), VFIO_GROUP_GET_STATUS flags before SET_CONTAINER \(status)")
        }
    }

    var options = VFIOBehaviourChecks.Options()
    options.prepareSource = { c in
        for port: UInt32 in [0, 1] {
            if case .success(let info) = source.regionInfo(port) {
                c.note("source BAR\(port) size \(info.size) offset 0x\(String(info.offset, radix: 16))")
            }
        }
        // Three bytes into port 0's loopback FIFO, a line-control value into port 1.
        KernelEnvironment.guestWrite(source, port: 0, register: KernelEnvironment.UART.transmit, bytes: Array("Sw!".utf8), &c)
        KernelEnvironment.guestWrite(source, port: 1, register: KernelEnvironment.UART.lineControl, bytes: [0x1B], &c)
    }
    options.guardedRequest = { request in
        switch DeadlineChild.run(limit: KernelEnvironment.guardedRequestLimit, request) {
        case .answered(let errno): return .returned(errno)
        case .failed(let what): return .failed(what)
        case .timedOut(let what):
            KernelTestSupport.printLine("  info: \(what)")
            return .hung
        }
    }
    do {
        let checks = try VFIOBehaviourChecks(source: source, destination: destination, options: options)
        if checks.run(into: &report) == .stoppedByHang {
            // The device's state mutex stays held by the child: nothing more can be asked of it.
            KernelTestSupport.printLine(report.summary())
            _exit(1)
        }
    } catch {
        report.record(VFIOCheckResult(name: "behaviour-checks", problems: ["\(error)"]))
    }

    LifecycleChecks.run(source: source, destination: destination, report: &report)
    DirtyTrackingChecks.run(source: source, destination: destination, report: &report)
    MigrationRun.run(source: source, destination: destination, report: &report)
    KernelTestSupport.printLine(report.summary())
    return report.failed == 0 ? 0 : 1
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--role" {
    exit(MigrationRole.main(Array(arguments.dropFirst())))
}
exit(runChecks(arguments))
#else
print("kernel-vfio-check talks to the Linux VFIO uAPI: it runs on Linux only")
#endif
