import Testing
import VFIO

@Suite("Migration state machine against the reference tables")
struct VFIOMigrationFSMTests {
    @Test("Every table entry matches §2.3")
    func tableEntriesMatchTheReference() {
        for current in VFIODeviceState.allCases {
            for requested in VFIODeviceState.allCases {
                #expect(
                    VFIOMigrationFSM.tableEntry(from: current, to: requested) == ReferenceTable.entry(current, requested),
                    "\(current)→\(requested)")
            }
        }
    }

    @Test("The path of every pair for every flag set is the reference algorithm's", arguments: TransitionCase.all)
    func pathMatchesReferenceAlgorithm(_ c: TransitionCase) {
        #expect(VFIOMigrationFSM.path(from: c.from, to: c.to, flags: c.flags) == ReferenceTable.path(c.from, c.to, c.flags))
    }

    @Test("Flags 7 paths and their fd marks are §2.4's matrix")
    func flags7PathsMatchTheCombinationMatrix() throws {
        let flags: VFIOMigrationFlags = [.stopCopy, .p2p, .preCopy]
        for (from, cells) in ReferenceTable.flags7Rows {
            for (column, cell) in cells.enumerated() {
                let to = ReferenceTable.flags7Columns[column]
                let expected = ReferenceTable.parse(cell)
                let path = VFIOMigrationFSM.path(from: from, to: to, flags: flags)
                #expect(path == expected?.steps, "\(from)→\(to)")
                if let path, let expected {
                    var state = from
                    var opened = false
                    for (index, step) in path.enumerated() {
                        let opens = VFIOMigrationFSM.arcOpensSession(from: state, to: step)
                        // No path carries a new fd through an interior step.
                        #expect(!opens || index == path.count - 1, "\(from)→\(to)")
                        opened = opened || opens
                        state = step
                    }
                    #expect(opened == expected.fd, "\(from)→\(to) fd")
                }
            }
        }
    }

    @Test("Paths listed in §2.4 for flags 1, 3 and 5")
    func listedPathsForSmallerFlagSets() {
        for (flags, from, to, text) in ReferenceTable.listedPaths {
            let expected = ReferenceTable.parse(text)
            let path = VFIOMigrationFSM.path(from: from, to: to, flags: flags)
            #expect(path == expected?.steps, "flags \(flags.rawValue) \(from)→\(to)")
            if let path, let last = path.last {
                let previous = path.count > 1 ? path[path.count - 2] : from
                #expect(VFIOMigrationFSM.arcOpensSession(from: previous, to: last) == expected?.fd)
            }
        }
    }

    @Test("ERROR is never a valid request nor a valid starting point")
    func errorIsNeverRequestable() {
        for flags in VFIOMigrationFlags.definedCombinations {
            for state in VFIODeviceState.allCases {
                #expect(VFIOMigrationFSM.path(from: state, to: .error, flags: flags) == nil)
                #expect(VFIOMigrationFSM.path(from: .error, to: state, flags: flags) == nil)
            }
        }
    }

    @Test("Supported states per flag set follow §1.3")
    func supportedStatesPerFlagSet() {
        #expect(VFIOMigrationFlags([.stopCopy]).supportedStates == [.stop, .running, .stopCopy, .resuming])
        #expect(VFIOMigrationFlags([.stopCopy, .p2p]).supportedStates == [.stop, .running, .stopCopy, .resuming, .runningP2P])
        #expect(VFIOMigrationFlags([.stopCopy, .preCopy]).supportedStates == [.stop, .running, .stopCopy, .resuming, .preCopy])
        #expect(VFIOMigrationFlags([.stopCopy, .p2p, .preCopy]).supportedStates.count == 7)
    }

    @Test("ioctl numbers are _IO(';', 100 + n)")
    func ioctlNumbers() {
        #expect(VFIOUAPI.getAPIVersion == 0x3B64)
        #expect(VFIOUAPI.checkExtension == 0x3B65)
        #expect(VFIOUAPI.setIOMMU == 0x3B66)
        #expect(VFIOUAPI.groupGetStatus == 0x3B67)
        #expect(VFIOUAPI.groupSetContainer == 0x3B68)
        #expect(VFIOUAPI.groupGetDeviceFD == 0x3B6A)
        #expect(VFIOUAPI.deviceReset == 0x3B6F)
        #expect(VFIOUAPI.deviceFeature == 0x3B75)
        #expect(VFIOUAPI.deviceBindIOMMUFD == 0x3B76)
        #expect(VFIOUAPI.deviceAttachIOMMUFDPT == 0x3B77)
        #expect(VFIOUAPI.deviceDetachIOMMUFDPT == 0x3B78)
        #expect(VFIOUAPI.migGetPrecopyInfo == 0x3B79)
        #expect(VFIOUAPI.iommuIOASAlloc == 0x3B81)
    }

    @Test("Argument layouts encode to the kernel's bytes")
    func layoutsEncodeExactly() {
        #expect(
            VFIODeviceFeatureHeader.request(.migDeviceState, VFIOUAPI.featureSet, payload: VFIOMigDeviceStatePayload(deviceState: 6).bytes)
                == [16, 0, 0, 0, 0x02, 0, 0x02, 0, 6, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(
            VFIOPrecopyInfoLayout(initialBytes: 0x0102, dirtyBytes: 3).bytes
                == [24, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0])
        #expect(VFIODeviceBindIOMMUFD(iommufd: 7).bytes == [16, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0])
        #expect(VFIODeviceAttachIOMMUFDPT(ptID: 2).bytes == [12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0])
        #expect(IOMMUIOASAlloc().bytes == [12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(VFIODMALoggingControl(pageSize: 4096, numRanges: 1, ranges: 0x10).bytes.count == 24)
        #expect(VFIODMALoggingReport(iova: 0, length: 1 << 20, pageSize: 4096, bitmap: 0x20).bytes.count == 32)
        #expect(VFIODMALoggingRange(iova: 0x1000, length: 0x2000).bytes == [0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0])
    }

    @Test("Every field of every layout lands at its offset, little-endian, and decodes back")
    func layoutsPlaceEveryField() {
        // Distinct bytes in every field, so a swapped, shifted or truncated field changes the bytes.
        let info = VFIODeviceInfo(argsz: 0x0403_0201, flags: 0x0807_0605, numRegions: 0x0C0B_0A09, numIRQs: 0x100F_0E0D)
        #expect(info.bytes == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] + [UInt8](repeating: 0, count: 8))
        #expect(VFIODeviceInfo(bytes: info.bytes) == info)
        let group = VFIOGroupStatus(argsz: 0x0403_0201, flags: 0x0807_0605)
        #expect(group.bytes == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(VFIOGroupStatus(bytes: group.bytes) == group)
        let header = VFIODeviceFeatureHeader(argsz: 0x0403_0201, flags: 0x0807_0605)
        #expect(header.bytes == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(VFIODeviceFeatureHeader(bytes: header.bytes + [9]) == header)
        let state = VFIOMigDeviceStatePayload(deviceState: 0x0403_0201, dataFD: -2)
        #expect(state.bytes == [1, 2, 3, 4, 0xFE, 0xFF, 0xFF, 0xFF])
        #expect(VFIOMigDeviceStatePayload(bytes: state.bytes) == state)
        let precopy = VFIOPrecopyInfoLayout(
            argsz: 0x0403_0201, flags: 0x0807_0605, initialBytes: 0x100F_0E0D_0C0B_0A09, dirtyBytes: 0x1817_1615_1413_1211)
        #expect(precopy.bytes == Array(1...24))
        #expect(VFIOPrecopyInfoLayout(bytes: precopy.bytes) == precopy)
        let bind = VFIODeviceBindIOMMUFD(argsz: 0x0403_0201, flags: 0x0807_0605, iommufd: 0x0C0B_0A09, outDevID: 0x100F_0E0D)
        #expect(bind.bytes == Array(1...16))
        #expect(VFIODeviceBindIOMMUFD(bytes: bind.bytes) == bind)
        let attach = VFIODeviceAttachIOMMUFDPT(argsz: 0x0403_0201, flags: 0x0807_0605, ptID: 0x0C0B_0A09)
        #expect(attach.bytes == Array(1...12))
        #expect(VFIODeviceAttachIOMMUFDPT(bytes: attach.bytes) == attach)
        let alloc = IOMMUIOASAlloc(size: 0x0403_0201, flags: 0x0807_0605, outIOASID: 0x0C0B_0A09)
        #expect(alloc.bytes == Array(1...12))
        #expect(IOMMUIOASAlloc(bytes: alloc.bytes) == alloc)
        let control = VFIODMALoggingControl(
            pageSize: 0x0807_0605_0403_0201, numRanges: 0x0C0B_0A09, reserved: 0x100F_0E0D, ranges: 0x1817_1615_1413_1211)
        #expect(control.bytes == Array(1...24))
        #expect(VFIODMALoggingControl(bytes: control.bytes) == control)
        let report = VFIODMALoggingReport(
            iova: 0x0807_0605_0403_0201, length: 0x100F_0E0D_0C0B_0A09, pageSize: 0x1817_1615_1413_1211, bitmap: 0x201F_1E1D_1C1B_1A19)
        #expect(report.bytes == Array(1...32))
        #expect(VFIODMALoggingReport(bytes: report.bytes) == report)
        let range = VFIODMALoggingRange(iova: 0x0807_0605_0403_0201, length: 0x100F_0E0D_0C0B_0A09)
        #expect(range.bytes == Array(1...16))
    }

    @Test("A layout decodes from no fewer bytes than its size")
    func layoutsRefuseShortInput() {
        #expect(VFIODeviceFeatureHeader(bytes: [UInt8](repeating: 0, count: 7)) == nil)
        #expect(VFIOMigDeviceStatePayload(bytes: [UInt8](repeating: 0, count: 7)) == nil)
        #expect(VFIOPrecopyInfoLayout(bytes: [UInt8](repeating: 0, count: 23)) == nil)
        #expect(VFIODeviceInfo(bytes: [UInt8](repeating: 0, count: 23)) == nil)
        #expect(VFIOGroupStatus(bytes: [UInt8](repeating: 0, count: 7)) == nil)
        #expect(VFIODeviceBindIOMMUFD(bytes: [UInt8](repeating: 0, count: 15)) == nil)
        #expect(VFIODeviceAttachIOMMUFDPT(bytes: [UInt8](repeating: 0, count: 11)) == nil)
        #expect(IOMMUIOASAlloc(bytes: [UInt8](repeating: 0, count: 11)) == nil)
        #expect(VFIODMALoggingControl(bytes: [UInt8](repeating: 0, count: 23)) == nil)
        #expect(VFIODMALoggingReport(bytes: [UInt8](repeating: 0, count: 31)) == nil)
        // Decoding reads from the collection's own start, also for a slice.
        let bytes: [UInt8] = [0xAA] + VFIOGroupStatus(argsz: 8, flags: 3).bytes
        #expect(VFIOGroupStatus(bytes: bytes[1...]) == VFIOGroupStatus(argsz: 8, flags: 3))
    }
}
