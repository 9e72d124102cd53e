import SystemPackage
import VFIO

/// Identifies one data session; its fd answers ENODEV once the session is no longer the device's.
final class SimulatedSessionRef: Sendable {
    let id: UInt64
    let direction: VFIODataDirection

    init(id: UInt64, direction: VFIODataDirection) { (self.id, self.direction) = (id, direction) }
}

/// The device fd of a simulated device.
final class SimulatedDeviceFile: SimulatedControlFile {
    let driver: SimulatedVFIODriver

    init(driver: SimulatedVFIODriver) { self.driver = driver }

    func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        driver.deviceIoctl(request, argument)
    }
    // Device fds read and write regions at offsets (the simulator has the config region alone);
    // read/write without an offset: EINVAL (SimulatedControlFile).
    func pread(into buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        driver.configRead(into: buffer, offset: offset)
    }
    func pwrite(from buffer: UnsafeRawBufferPointer, offset: Int64) -> Result<Int, Errno> {
        driver.configWrite(from: buffer, offset: offset)
    }
    func release() { driver.deviceReleased() }
}

/// A migration data fd of a simulated device: a stream, read-only (save) or write-only (resume).
final class SimulatedDataFile: SimulatedFile {
    let driver: SimulatedVFIODriver
    let session: SimulatedSessionRef

    init(driver: SimulatedVFIODriver, session: SimulatedSessionRef) { (self.driver, self.session) = (driver, session) }

    func ioctl(_ request: UInt, _ argument: VFIOIoctlArgument) -> Result<Int32, Errno> {
        driver.dataIoctl(session, request, argument)
    }
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> { driver.read(session, into: buffer) }
    func write(from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> { driver.write(session, from: buffer) }
    func poll(events: Int16) -> Int16 {
        // Without a poll op the kernel reports the default mask: always readable and writable.
        session.direction == .save ? 0x0001 | 0x0040 : 0x0004 | 0x0100
    }
    var positionalIOError: Errno { .illegalSeek }
    // Closing a data fd early does not change the device state.
    func release() {}
}
