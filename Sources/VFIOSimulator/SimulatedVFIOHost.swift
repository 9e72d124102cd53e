import Synchronization
import SystemPackage
import VFIO

/// A fake host for `KernelVFIODevice`: it answers `open(2)` of /dev/vfio/vfio, /dev/vfio/N,
/// /dev/iommu and /dev/vfio/devices/vfioX with simulated files (real fds), and — optionally — the
/// sysfs lookups, so the kernel-backed device runs its real open path and migration ioctls against
/// simulated devices without /dev/vfio. Every other call goes to `base`.
package final class SimulatedVFIOHost: VFIOForwardingSyscalls {
    package struct DeviceEntry: Sendable {
        package var address: VFIODeviceAddress
        package var group: Int
        package var cdev: String?
        package var driver: SimulatedVFIODriver
    }

    package let base: any VFIOSyscalls
    package let paths: VFIOHostPaths
    /// Whether the kernel has IOMMUFD and device cdevs (/dev/iommu, /dev/vfio/devices/).
    package let cdevSupport: Bool
    /// Whether readlink/listDirectory under `paths.sysfsRoot` are answered from the device table.
    package let virtualSysfs: Bool
    /// Whether the type1 containers it opens have the migration capability (dirty tracking).
    package let type1MigrationCapability: Bool
    private let accessor = Mutex<SimulatedDMAMemoryAccessor?>(nil)
    private let devices = Mutex<[String: DeviceEntry]>([:])

    package init(
        paths: VFIOHostPaths = VFIOHostPaths(sysfsRoot: "/simulated/sys", devRoot: "/simulated/dev"),
        cdevSupport: Bool = false, virtualSysfs: Bool = true, type1MigrationCapability: Bool = true,
        base: any VFIOSyscalls = VFIOSystem.simulated
    ) {
        self.type1MigrationCapability = type1MigrationCapability
        self.paths = paths
        self.cdevSupport = cdevSupport
        self.virtualSysfs = virtualSysfs
        self.base = base
    }

    /// Adds a device in IOMMU group `group`, with cdev `vfio<cdevIndex>` when given.
    @discardableResult
    package func addDevice(
        _ address: VFIODeviceAddress, group: Int, cdevIndex: Int? = nil, configuration: SimulatedVFIOConfiguration,
        clock: any VFIOSimulationClock
    ) -> SimulatedVFIODriver {
        var configuration = configuration
        configuration.name = address.name
        let driver = SimulatedVFIODriver(configuration: configuration, clock: clock)
        devices.withLock {
            $0[address.name] = DeviceEntry(address: address, group: group, cdev: cdevIndex.map { "vfio\($0)" }, driver: driver)
        }
        return driver
    }

    /// The function the DMA writes of devices behind the containers and IOASes opened from now
    /// on store through (nil: the direct store).
    package func setMemoryAccessor(_ accessor: SimulatedDMAMemoryAccessor?) { self.accessor.withLock { $0 = accessor } }

    package func device(named name: String) -> DeviceEntry? { devices.withLock { $0[name] } }

    private func devices(inGroup group: Int) -> [DeviceEntry] {
        devices.withLock { $0.values.filter { $0.group == group } }
    }

    // MARK: Paths

    package func open(_ path: String, _ flags: Int32) -> Result<Int32, Errno> {
        let dev = paths.devRoot
        guard path.hasPrefix(dev + "/") else { return base.open(path, flags) }
        let table = SimulatedFileTable.shared
        let accessor = accessor.withLock { $0 }
        if path == "\(dev)/vfio/vfio" {
            return table.open(SimulatedType1ContainerFile(migrationCapability: type1MigrationCapability, accessor: accessor))
        }
        if path == "\(dev)/iommu" {
            return cdevSupport ? table.open(SimulatedIOMMUFDFile(accessor: accessor)) : .failure(.noSuchFileOrDirectory)
        }
        let devicesPrefix = "\(dev)/vfio/devices/"
        if path.hasPrefix(devicesPrefix) {
            let cdev = String(path.dropFirst(devicesPrefix.count))
            guard cdevSupport, let entry = devices.withLock({ $0.values.first { $0.cdev == cdev } }) else {
                return .failure(.noSuchFileOrDirectory)
            }
            return table.open(SimulatedCDevFile(driver: entry.driver))
        }
        let groupPrefix = "\(dev)/vfio/"
        if path.hasPrefix(groupPrefix), let group = Int(path.dropFirst(groupPrefix.count)), !devices(inGroup: group).isEmpty {
            return table.open(SimulatedGroupFile(host: self, number: group))
        }
        return .failure(.noSuchFileOrDirectory)
    }

    package func readlink(_ path: String) -> Result<String, Errno> {
        guard virtualSysfs, path.hasPrefix(paths.sysfsRoot + "/") else { return base.readlink(path) }
        let entry = devices.withLock { $0.values.first { $0.address.sysfsDirectory(in: paths.sysfsRoot) + "/iommu_group" == path } }
        guard let entry else { return .failure(.noSuchFileOrDirectory) }
        return .success("../../../kernel/iommu_groups/\(entry.group)")
    }

    package func listDirectory(_ path: String) -> Result<[String], Errno> {
        guard virtualSysfs, path.hasPrefix(paths.sysfsRoot + "/") else { return base.listDirectory(path) }
        let entry = devices.withLock { $0.values.first { $0.address.sysfsDirectory(in: paths.sysfsRoot) + "/vfio-dev" == path } }
        guard let entry, let cdev = entry.cdev else { return .failure(.noSuchFileOrDirectory) }
        return .success([cdev])
    }

    // fd calls (close, ioctl, read, write, pread, pwrite, lseek, poll) go to the layer below, which
    // routes simulated fds: VFIOForwardingSyscalls.

    // MARK: Group files

    fileprivate func deviceFD(named name: String, inGroup group: Int, container: SimulatedType1ContainerFile) -> Result<Int32, Errno> {
        guard let entry = devices.withLock({ $0[name] }), entry.group == group else { return .failure(.operationNotSupportedByDevice) }
        entry.driver.attach(container.attachment)
        return SimulatedFileTable.shared.open(SimulatedDeviceFile(driver: entry.driver))
    }
}

/// /dev/vfio/N.
private final class SimulatedGroupFile: SimulatedControlFile {
    let host: SimulatedVFIOHost
    let number: Int
    let container = Mutex<SimulatedType1ContainerFile?>(nil)

    init(host: SimulatedVFIOHost, number: Int) { (self.host, self.number) = (host, number) }

    func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        guard case .buffer(let buffer) = argument else { return .failure(.inappropriateIOCTLForDevice) }
        switch request {
        case VFIOUAPI.groupGetStatus:
            guard let status = VFIOGroupStatus(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
            guard status.argsz >= UInt32(VFIOGroupStatus.size) else { return .failure(.invalidArgument) }
            let flags = VFIOUAPI.groupFlagViable | (container.withLock { $0 } != nil ? VFIOUAPI.groupFlagContainerSet : 0)
            let reply = VFIOGroupStatus(argsz: status.argsz, flags: flags).bytes
            for (index, byte) in reply.enumerated() { buffer[index] = byte }
            return .success(0)
        case VFIOUAPI.groupSetContainer:
            guard buffer.count >= 4 else { return .failure(.badAddress) }
            let fd = LittleEndianBytes.load(Int32.self, from: UnsafeRawBufferPointer(buffer), at: 0)
            guard let file = SimulatedFileTable.shared.file(for: fd) as? SimulatedType1ContainerFile else {
                return .failure(.badFileDescriptor)
            }
            return container.withLock { current in
                guard current == nil else { return .failure(.resourceBusy) }
                current = file
                file.attachGroup()
                return .success(0)
            }
        case VFIOUAPI.groupGetDeviceFD:
            guard let container = container.withLock({ $0 }), container.isReady else { return .failure(.invalidArgument) }
            guard let end = buffer.firstIndex(of: 0) else { return .failure(.badAddress) }
            let name = String(decoding: buffer[0..<end], as: UTF8.self)
            return host.deviceFD(named: name, inGroup: number, container: container)
        default:
            return .failure(.inappropriateIOCTLForDevice)
        }
    }
}

/// /dev/vfio/devices/vfioX: inert until bound to an iommufd, then the device fd.
private final class SimulatedCDevFile: SimulatedControlFile {
    struct State {
        var boundTo: Int32?
        var iommufd: SimulatedIOMMUFDFile?
        var attached = false
    }

    let driver: SimulatedVFIODriver
    let state = Mutex(State())

    init(driver: SimulatedVFIODriver) { self.driver = driver }

    func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        switch (request, argument) {
        case (VFIOUAPI.deviceBindIOMMUFD, .buffer(let buffer)):
            guard let bind = VFIODeviceBindIOMMUFD(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
            guard bind.argsz >= UInt32(VFIODeviceBindIOMMUFD.size), bind.flags == 0, bind.iommufd >= 0 else {
                return .failure(.invalidArgument)
            }
            guard let iommufd = SimulatedFileTable.shared.file(for: bind.iommufd) as? SimulatedIOMMUFDFile else {
                return .failure(.badFileDescriptor)
            }
            return state.withLock { state in
                guard state.boundTo == nil else { return .failure(.invalidArgument) }
                state.boundTo = bind.iommufd
                state.iommufd = iommufd
                let devID = iommufd.bind(driver)
                let reply = VFIODeviceBindIOMMUFD(argsz: bind.argsz, flags: 0, iommufd: bind.iommufd, outDevID: devID).bytes
                for (index, byte) in reply.enumerated() { buffer[index] = byte }
                return .success(0)
            }
        case (VFIOUAPI.deviceAttachIOMMUFDPT, .buffer(let buffer)):
            guard let attach = VFIODeviceAttachIOMMUFDPT(bytes: UnsafeRawBufferPointer(buffer)) else { return .failure(.badAddress) }
            guard attach.argsz >= UInt32(VFIODeviceAttachIOMMUFDPT.size), attach.flags == 0 else { return .failure(.invalidArgument) }
            return state.withLock { state in
                guard state.boundTo != nil, let iommufd = state.iommufd else { return .failure(.invalidArgument) }
                // iommufd_device_attach: the IOAS or HWPT id must exist (ENOENT).
                guard let attachment = iommufd.attachment(for: attach.ptID) else { return .failure(.noSuchFileOrDirectory) }
                driver.attach(attachment)
                state.attached = true
                return .success(0)
            }
        default:
            // Until bound the fd is inert.
            guard state.withLock({ $0.boundTo != nil }) else { return .failure(.invalidArgument) }
            return driver.deviceIoctl(request, argument)
        }
    }

    func release() {
        if state.withLock({ $0.boundTo != nil }) { driver.deviceReleased() }
    }
}
