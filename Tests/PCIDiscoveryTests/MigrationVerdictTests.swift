import DeviceMatch
import PCIDiscovery
import Testing

@Suite("Migratability verdicts")
struct MigrationVerdictTests {
    let advisor = MigrationAdvisor(handlers: shippedModules)

    func verdict(_ bdf: String, probe: VFIOProbeOutcome? = nil, dmaLogging: VFIODMALoggingOutcome? = nil) throws -> MigrationVerdict {
        advisor.verdict(for: try scan(FakeSysfs.standard()).device(bdf), probe: probe, dmaLogging: dmaLogging)
    }

    @Test("a ConnectX-7 VF on mlx5_vfio_pci is migratable by the mlx5 module")
    func mlx5Migratable() throws {
        let v = try verdict("0000:3b:00.1")
        #expect(v.isMigratable)
        #expect(v.handler == "mlx5")
        #expect(v.reasons.isEmpty)
        #expect(v.notes.isEmpty)
        #expect(v.flags == [.stopCopy, .p2p, .preCopy])
        #expect(v.flagsSource == .driverTable)
        #expect(v.variantDriver == "mlx5_vfio_pci")
        #expect(v.p2p == true)
        #expect(v.dirtyTracking == .init(kind: .dmaLogging, source: .driverTable, detail: "when the firmware has adv_virtualization"))
    }

    @Test("a ConnectX-7 VF on plain vfio-pci: names the variant driver and the command")
    func mlx5OnPlainVFIO() throws {
        let v = try verdict("0000:3b:00.2")
        #expect(!v.isMigratable)
        #expect(v.handler == nil)
        #expect(
            v.reasons == [
                "bound to vfio-pci, which has no migration support; the variant driver mlx5_vfio_pci serves 15b3:101e: "
                    + "echo mlx5_vfio_pci > /sys/bus/pci/devices/0000:3b:00.2/driver_override; "
                    + "echo 0000:3b:00.2 > /sys/bus/pci/devices/0000:3b:00.2/driver/unbind; "
                    + "echo 0000:3b:00.2 > /sys/bus/pci/drivers_probe"
            ])
    }

    @Test("an Intel VF on vfio-pci: no variant driver exists")
    func intelOnPlainVFIO() throws {
        let v = try verdict("0000:5e:01.0")
        #expect(!v.isMigratable)
        #expect(
            v.reasons == [
                "bound to vfio-pci, which has no migration support",
                "no VFIO variant driver with migration support is known for 8086:1889, and plain vfio-pci has none"
            ])
    }

    @Test("a NIC on its own driver, and an SR-IOV PF pointing at its VFs")
    func hostDrivers() throws {
        let nic = try verdict("0000:af:00.0")
        #expect(!nic.isMigratable)
        #expect(nic.reasons.first == "bound to i40e, not to a VFIO driver")
        let pf = try verdict("0000:3b:00.0")
        #expect(!pf.isMigratable)
        #expect(pf.reasons.first == "bound to mlx5_core, not to a VFIO driver")
        #expect(
            pf.notes == [
                "an SR-IOV physical function with 2 virtual functions (0000:3b:00.1, 0000:3b:00.2): pass through and migrate those"
            ])
    }

    @Test("an unbound device without an IOMMU group")
    func unbound() throws {
        let v = try verdict("0000:d8:00.0")
        #expect(!v.isMigratable)
        #expect(v.reasons.contains("not bound to any driver"))
        #expect(v.reasons.contains("virtio_vfio_pci migrates 1af4:1041 only as an SR-IOV virtual function, and 0000:d8:00.0 is not one"))
        #expect(v.reasons.last?.hasPrefix("no IOMMU group: ") == true)
    }

    @Test("an unbound ConnectX VF is told which driver to bind")
    func unboundVariantCandidate() throws {
        let tree = try FakeSysfs()
        try tree.add(
            .init(
                address: "0000:3b:00.3", vendor: 0x15b3, device: 0x101e, classCode: 0x020000,
                iommuGroup: 44, physfn: "0000:3b:00.0"))
        let v = advisor.verdict(for: try scan(tree).device("0000:3b:00.3"))
        #expect(
            v.reasons == [
                "not bound to any driver; the variant driver mlx5_vfio_pci serves 15b3:101e: "
                    + "echo mlx5_vfio_pci > /sys/bus/pci/devices/0000:3b:00.3/driver_override; "
                    + "echo 0000:3b:00.3 > /sys/bus/pci/drivers_probe"
            ])
    }

    @Test("hisi_acc_vfio_pci has no P2P and no DMA logging: migratable, with notes")
    func hisiWithoutP2P() throws {
        let v = try verdict("0000:7d:00.1")
        #expect(v.isMigratable)
        #expect(v.handler == "vfio-pci")
        #expect(v.flags == [.stopCopy, .preCopy])
        #expect(v.p2p == false)
        #expect(v.dirtyTracking == .init(kind: .none, source: .driverTable))
        #expect(v.notes.count == 2)
        #expect(v.notes.first?.hasPrefix("no P2P: hisi_acc_vfio_pci") == true)
        #expect(v.notes.last?.hasPrefix("no device dirty tracking: ") == true)
    }

    static let noPreCopy = "no PRE_COPY: all device state moves while the guest is stopped: expect a longer downtime"

    @Test("stop-copy only: pds_vfio_pci is migratable, and the missing PRE_COPY is a note, not a reason")
    func pdsStopCopyOnly() throws {
        let v = try verdict("0000:81:00.1")
        #expect(v.isMigratable)
        #expect(v.handler == "vfio-pci")
        #expect(v.reasons.isEmpty)
        #expect(v.flags == [.stopCopy, .p2p])
        #expect(v.flagsSource == .driverTable)
        #expect(v.p2p == true)
        #expect(v.dirtyTracking == .init(kind: .dmaLogging, source: .driverTable))
        #expect(v.notes == [Self.noPreCopy])
    }

    @Test("stop-copy only, confirmed by --probe: the flags come from the device")
    func pdsStopCopyOnlyProbed() throws {
        let probed = try verdict("0000:81:00.1", probe: .supported([.stopCopy]))
        #expect(probed.isMigratable)
        #expect(probed.handler == "vfio-pci")
        #expect(probed.flags == [.stopCopy])
        #expect(probed.flagsSource == .probe)
        #expect(probed.p2p == false)
        #expect(probed.notes.first == Self.noPreCopy)
        #expect(probed.notes.dropFirst().first?.hasPrefix("no P2P: pds_vfio_pci") == true)
    }

    @Test("stop-copy only: xe-vfio-pci from the driver table, an unknown variant confirmed by --probe")
    func otherStopCopyOnlyDrivers() throws {
        let tree = try FakeSysfs()
        try tree.add(
            .init(
                address: "0000:03:00.1", vendor: 0x8086, device: 0xe212, classCode: 0x030000,
                driver: "xe-vfio-pci", iommuGroup: 7, physfn: "0000:03:00.0"))
        try tree.add(
            .init(
                address: "0000:04:00.0", vendor: 0x1234, device: 0x5678, classCode: 0x020000,
                driver: "acme_vfio_pci", iommuGroup: 8))
        let result = try scan(tree)
        let xe = advisor.verdict(for: try result.device("0000:03:00.1"))
        #expect(xe.isMigratable)
        #expect(xe.handler == "vfio-pci")
        #expect(xe.flags == [.stopCopy, .p2p])
        #expect(xe.notes.first == Self.noPreCopy)
        let acme = advisor.verdict(for: try result.device("0000:04:00.0"), probe: .supported([.stopCopy, .p2p]))
        #expect(acme.isMigratable)
        #expect(acme.notes == [Self.noPreCopy])
        #expect(acme.dirtyTracking == nil)
    }

    @Test("--probe's DMA-logging answer wins over the driver table; a failed probe falls back to it")
    func dmaLoggingProbe() throws {
        let confirmed = try verdict("0000:7d:00.1", probe: .supported([.stopCopy, .preCopy]), dmaLogging: .supported)
        #expect(confirmed.dirtyTracking == .init(kind: .dmaLogging, source: .probe))
        #expect(!confirmed.notes.contains { $0.hasPrefix("no device dirty tracking") })
        let refused = try verdict(
            "0000:81:00.1", probe: .supported([.stopCopy, .p2p]), dmaLogging: .unsupported(.inappropriateIOCTLForDevice))
        #expect(refused.isMigratable)
        #expect(refused.dirtyTracking == .init(kind: .none, source: .probe, detail: "PROBE DMA_LOGGING_START: ENOTTY"))
        #expect(refused.notes.last?.hasPrefix("no device dirty tracking: ") == true)
        let failed = try verdict(
            "0000:81:00.1", probe: .supported([.stopCopy, .p2p]),
            dmaLogging: .failed(reason: "VFIO_DEVICE_FEATURE(PROBE DMA_LOGGING_START): Input/output error"))
        #expect(failed.dirtyTracking == .init(kind: .dmaLogging, source: .driverTable))
        #expect(
            failed.notes.contains("--probe could not ask for DMA logging: VFIO_DEVICE_FEATURE(PROBE DMA_LOGGING_START): Input/output error")
        )
    }

    @Test("the kernel's answer wins over the driver table")
    func probeOutcomes() throws {
        let refused = try verdict("0000:3b:00.1", probe: .unsupported(.inappropriateIOCTLForDevice))
        #expect(!refused.isMigratable)
        #expect(refused.reasons.first?.contains("VFIO_DEVICE_FEATURE MIGRATION: ENOTTY") == true)
        let noStopCopy = try verdict("0000:3b:00.1", probe: .supported([.p2p]))
        #expect(!noStopCopy.isMigratable)
        let failed = try verdict("0000:3b:00.1", probe: .failed(reason: "open /dev/vfio/42: Device or resource busy"))
        #expect(failed.isMigratable)
        #expect(failed.notes == ["--probe could not read the migration flags: open /dev/vfio/42: Device or resource busy"])
    }

    @Test("flags without STOP_COPY are named in the reason; no flags at all read 'none'")
    func probedFlagsWithoutStopCopy() throws {
        let p2pOnly = try verdict("0000:3b:00.1", probe: .supported([.p2p, .preCopy]))
        #expect(p2pOnly.reasons == ["the kernel reports migration flags P2P|PRE_COPY without STOP_COPY"])
        let none = try verdict("0000:3b:00.1", probe: .supported([]))
        #expect(none.reasons == ["the kernel reports migration flags none without STOP_COPY"])
    }

    @Test("an unknown VFIO variant driver needs --probe")
    func unknownVariant() throws {
        let tree = try FakeSysfs()
        try tree.add(
            .init(
                address: "0000:01:00.0", vendor: 0x1234, device: 0x5678, classCode: 0x030000,
                driver: "acme_vfio_pci", iommuGroup: 5))
        let device = try scan(tree).device("0000:01:00.0")
        #expect(device.vfioDeviceNode == "/dev/vfio/5")
        let v = advisor.verdict(for: device)
        #expect(!v.isMigratable)
        #expect(
            v.reasons == [
                "bound to acme_vfio_pci, a VFIO driver whose migration support devprobe does not know; run devprobe --probe as root to ask the kernel"
            ])
        let unprobed = advisor.verdict(for: device, probe: .failed(reason: "open /dev/vfio/5: Permission denied"))
        #expect(unprobed.reasons == v.reasons)
        #expect(unprobed.notes == ["--probe could not read the migration flags: open /dev/vfio/5: Permission denied"])
        let confirmed = advisor.verdict(for: device, probe: .supported([.stopCopy, .p2p, .preCopy]))
        #expect(confirmed.isMigratable)
        #expect(confirmed.handler == "vfio-pci")
    }

    @Test("plain vfio-pci with flags confirmed by --probe: the generic module is its handler, whatever its rules name")
    func probedPlainVFIOGetsGenericHandler() throws {
        let v = try verdict("0000:5e:01.0", probe: .supported([.stopCopy, .p2p, .preCopy]))
        #expect(v.handler == "vfio-pci")
        #expect(v.flags == [.stopCopy, .p2p, .preCopy])
        #expect(v.flagsSource == .probe)
        #expect(!v.isMigratable)
        #expect(
            v.reasons == [
                "bound to vfio-pci, which has no migration support",
                "no VFIO variant driver with migration support is known for 8086:1889, and plain vfio-pci has none"
            ])
    }

    @Test("no handler module: a table without the generic fallback")
    func noHandler() throws {
        let mlx5Only = MigrationAdvisor(handlers: PCIMatchTable([shippedModules.modules[0]]))
        let v = mlx5Only.verdict(for: try scan(FakeSysfs.standard()).device("0000:7d:00.1"))
        #expect(!v.isMigratable)
        #expect(v.reasons == ["no handler module serves 19e5:a256 on hisi_acc_vfio_pci: add a vendor module for it"])
    }

    @Test("no IOMMU group blocks an otherwise migratable device")
    func noIOMMUGroup() throws {
        let tree = try FakeSysfs()
        try tree.add(
            .init(
                address: "0000:3b:00.1", vendor: 0x15b3, device: 0x101e, classCode: 0x020000,
                driver: "mlx5_vfio_pci", physfn: "0000:3b:00.0"))
        let v = advisor.verdict(for: try scan(tree).device("0000:3b:00.1"))
        #expect(!v.isMigratable)
        #expect(v.handler == "mlx5")
        #expect(v.reasons.count == 1)
        #expect(v.reasons.first?.hasPrefix("no IOMMU group: ") == true)
    }

    @Test("virtio_vfio_pci migrates only virtual functions")
    func virtioPhysicalFunction() throws {
        let tree = try FakeSysfs()
        try tree.add(
            .init(
                address: "0000:01:00.0", vendor: 0x1af4, device: 0x1041, classCode: 0x020000,
                driver: "virtio_vfio_pci", iommuGroup: 3))
        try tree.add(
            .init(
                address: "0000:02:00.1", vendor: 0x1af4, device: 0x1041, classCode: 0x020000,
                driver: "virtio_vfio_pci", iommuGroup: 4, physfn: "0000:02:00.0"))
        let result = try scan(tree)
        let pf = advisor.verdict(for: try result.device("0000:01:00.0"))
        #expect(!pf.isMigratable)
        #expect(pf.reasons == ["virtio_vfio_pci migrates 1af4:1041 only as an SR-IOV virtual function, and 0000:01:00.0 is not one"])
        #expect(advisor.verdict(for: try result.device("0000:02:00.1")).isMigratable)
    }
}
