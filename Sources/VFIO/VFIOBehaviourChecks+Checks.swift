// The checks of `VFIOBehaviourChecks`, in the order they run. Each states what the kernel did on
// Debian's 6.12.117 with mtty (docs/kernel-test.md); the simulator must do the same. One file,
// just over 400 lines: the checks are a list read in run order beside docs/kernel-test.md's table.

import SystemPackage

extension VFIOBehaviourChecks {
    private var featureGet: UInt32 { VFIOUAPI.featureGet }
    private var featureSet: UInt32 { VFIOUAPI.featureSet }
    private var featureProbe: UInt32 { VFIOUAPI.featureProbe }
    /// A feature index no 6.12 driver knows (the feature space is 16 bits wide).
    private static let unknownFeature: UInt32 = 0x7FF0

    // MARK: - Features

    func migrationFlags(_ c: inout VFIOCheck) throws {
        for device in [source, destination] {
            c.expectEqual(try device.migrationFlags(), Self.expectedFlags, "\(device.name) MIGRATION flags")
        }
    }

    func migDataSize(_ c: inout VFIOCheck) throws {
        for device in [source, destination] {
            c.expectEqual(try device.stopCopySize(), UInt64(streamSize), "\(device.name) MIG_DATA_SIZE")
        }
    }

    private func ask(_ flags: UInt32, argsz: UInt32? = nil) -> Errno? {
        sourceClient.rawFeature(argsz: argsz, flags: flags, payload: [UInt8](repeating: 0, count: 8)).result.failureErrno
    }

    func featureProbe(_ c: inout VFIOCheck) {
        let migration = VFIOFeature.migration.rawValue
        let state = VFIOFeature.migDeviceState.rawValue
        let dataSize = VFIOFeature.migDataSize.rawValue
        c.expectSuccess(ask(featureProbe | migration), "PROBE MIGRATION")
        c.expectSuccess(ask(featureProbe | featureGet | migration), "PROBE|GET MIGRATION")
        c.expectErrno(ask(featureProbe | featureSet | migration), .invalidArgument, "PROBE|SET MIGRATION")
        c.expectSuccess(ask(featureProbe | featureGet | featureSet | state), "PROBE|GET|SET MIG_DEVICE_STATE")
        c.expectSuccess(ask(featureProbe | featureGet | dataSize), "PROBE|GET MIG_DATA_SIZE")
        c.expectErrno(ask(featureProbe | featureSet | dataSize), .invalidArgument, "PROBE|SET MIG_DATA_SIZE")
        c.expectErrno(ask(featureProbe | Self.unknownFeature), .inappropriateIOCTLForDevice, "PROBE unknown feature")
        // PROBE neither reads nor checks the payload.
        c.expectSuccess(ask(featureProbe | featureGet | migration, argsz: 8), "PROBE|GET MIGRATION with argsz 8")
    }

    func featureArgumentErrors(_ c: inout VFIOCheck) {
        let migration = VFIOFeature.migration.rawValue
        let state = VFIOFeature.migDeviceState.rawValue
        c.expectErrno(ask(featureGet | migration, argsz: 4), .invalidArgument, "argsz 4 (< header)")
        c.expectErrno(ask(featureGet | migration, argsz: 8), .invalidArgument, "GET MIGRATION without room for its payload")
        c.expectErrno(ask(featureGet | featureSet | state), .invalidArgument, "GET|SET without PROBE")
        c.expectErrno(ask(migration), .invalidArgument, "neither GET, SET nor PROBE")
        c.expectErrno(ask(featureGet | migration | (1 << 19)), .invalidArgument, "unknown flag bit 19")
        c.expectErrno(ask(featureSet | migration), .invalidArgument, "SET of GET-only MIGRATION")
        c.expectErrno(ask(featureGet | Self.unknownFeature), .inappropriateIOCTLForDevice, "GET unknown feature")
    }

    // MARK: - States

    func initialState(_ c: inout VFIOCheck) throws {
        for (device, client) in [(source, sourceClient), (destination, destinationClient)] {
            c.expectEqual(try device.deviceState(), .running, "\(device.name) state after open")
            let raw = try c.require(client.rawGetState(), "\(device.name) GET MIG_DEVICE_STATE")
            c.expectEqual(raw.dataFD, -1, "\(device.name) GET data_fd")
        }
    }

    func invalidStateRequests(_ c: inout VFIOCheck) throws {
        for raw: UInt32 in [VFIODeviceState.error.rawValue, 8, 99] {
            let answer = sourceClient.rawSetState(raw)
            c.expectErrno(answer.errno, .invalidArgument, "SET state \(raw)")
            c.expectEqual(answer.reply?.deviceState, raw, "SET state \(raw) echoed state")
            c.expectEqual(answer.reply?.dataFD, -1, "SET state \(raw) data_fd")
        }
        // The typed API refuses ERROR without asking.
        if let error = c.expectError("typed SET ERROR", { () throws(VFIOError) in try source.setState(.error) }) {
            guard case .unsupportedState = error else {
                c.expect(false, "typed SET ERROR: \(error), want unsupportedState")
                return
            }
        }
        c.expectEqual(try source.deviceState(), .running, "state after refused requests")
    }

    /// Reads the destination's own state (RUNNING → STOP_COPY → RUNNING) before anything is resumed into it.
    func destinationInitialReadout(_ c: inout VFIOCheck) throws {
        destinationBefore = try readStateOut(destination, &c)
        c.expectEqual(destinationBefore.count, streamSize, "destination stream size")
        checkHeader(destinationBefore, &c)
    }

    func prepareSource(_ c: inout VFIOCheck) throws {
        if let prepare = options.prepareSource {
            try prepare(&c)
        } else {
            c.note("the source's state already differs from the destination's: nothing to change")
        }
        c.expectEqual(try source.deviceState(), .running, "source state after preparing it")
    }

    // MARK: - The source, PRE_COPY to STOP_COPY

    func runningToPreCopy(_ c: inout VFIOCheck) throws {
        guard let fd = try source.setState(.preCopy) else { throw VFIOCheckAbort("RUNNING -> PRE_COPY opened no data fd") }
        saveFD = fd
        c.expectEqual(fd.direction, .save, "data fd direction")
        let flags = try c.require(fd.descriptorFlags(), "fcntl on the save fd")
        c.expectEqual(flags, VFIODescriptorFlags(closeOnExec: true, access: .readOnly), "save fd flags")
        c.expectEqual(try source.deviceState(), .preCopy, "GET after SET")
        c.expectEqual(try source.stopCopySize(), UInt64(streamSize), "MIG_DATA_SIZE in PRE_COPY")
    }

    func precopyInfo(_ c: inout VFIOCheck) throws {
        guard let fd = saveFD else { throw VFIOCheckAbort("no save fd from running-to-pre-copy") }
        c.expectEqual(try fd.precopyInfo(), VFIOPrecopyInfo(initialBytes: UInt64(Self.headerSize), dirtyBytes: 0), "PRECOPY_INFO")
        let zero = try c.require(fd.rawPrecopyInfo(flags: 0), "raw PRECOPY_INFO")
        c.expectEqual(zero.flags, 0, "flags out (passed 0)")
        // v1 drivers copy the caller's flags back unchanged.
        let echoed = try c.require(fd.rawPrecopyInfo(flags: 0xABC), "PRECOPY_INFO with flags 0xabc")
        c.expectEqual(hex(echoed.flags), "0xabc", "flags out (passed 0xabc)")
        c.expectEqual(echoed.initialBytes, UInt64(Self.headerSize), "initial_bytes (second call)")
        c.expectErrno(fd.rawPrecopyInfo(argsz: 16), .invalidArgument, "PRECOPY_INFO argsz 16")
        c.expectErrno(fd.rawIoctl(VFIOUAPI.migGetPrecopyInfo + 1), .inappropriateIOCTLForDevice, "other ioctl on the data fd")
    }

    func preCopyRead(_ c: inout VFIOCheck) throws {
        guard let fd = saveFD else { throw VFIOCheckAbort("no save fd") }
        let (bytes, reads) = try c.require(rawDrain(fd, chunk: 7), "read")
        c.expectEqual(reads, [7, 7, 7, 3, 0], "read sizes with 7-byte reads (0 = temporary end, not ENOMSG)")
        checkHeader(bytes, &c)
        // 0 again: the temporary end is not an error and does not end the session.
        c.expectEqual(try c.require(fd.rawRead(count: 64), "second read at the temporary end").count, 0, "second read")
        c.expectEqual(try typedDrain(fd).end, .drainedForNow, "typed read at the temporary end")
        c.expectEqual(try fd.precopyInfo(), VFIOPrecopyInfo(initialBytes: 0, dirtyBytes: 0), "PRECOPY_INFO after reading the header")
        sourceStream = bytes
    }

    func dataFDStreamOnly(_ c: inout VFIOCheck) throws {
        guard let fd = saveFD else { throw VFIOCheckAbort("no save fd") }
        c.expectErrno(fd.rawPread(), .illegalSeek, "pread")
        c.expectErrno(fd.rawSeek(), .illegalSeek, "lseek")
        c.expectErrno(fd.rawWrite([0]), .badFileDescriptor, "write on the read-only save fd")
    }

    func preCopyToStopCopy(_ c: inout VFIOCheck) throws {
        guard let fd = saveFD else { throw VFIOCheckAbort("no save fd") }
        c.expect(try source.setState(.preCopyP2P) == nil, "PRE_COPY -> PRE_COPY_P2P returned a new fd (same session)")
        c.expectEqual(try fd.precopyInfo().initialBytes, 0, "initial_bytes in PRE_COPY_P2P")
        c.expect(try source.setState(.stopCopy) == nil, "PRE_COPY_P2P -> STOP_COPY returned a new fd (the same fd goes on)")
        c.expectEqual(try source.deviceState(), .stopCopy, "GET after SET STOP_COPY")
        let (rest, reads) = try c.require(rawDrain(fd), "read the rest")
        c.expectEqual(reads, [streamSize - Self.headerSize, 0], "read sizes in STOP_COPY")
        c.expectEqual(try c.require(fd.rawRead(count: 64), "read after the end").count, 0, "read after the final end")
        c.expectEqual(try typedDrain(fd).end, .endOfStream, "typed read after the final end")
        sourceStream += rest
        c.expectEqual(sourceStream.count, streamSize, "whole stream size")
        c.expect(sourceStream != destinationBefore, "the source's state equals the destination's: preparing the source did not show")
        c.expectErrno(fd.rawPrecopyInfo(), .invalidArgument, "PRECOPY_INFO in STOP_COPY")
        if let error = c.expectError("typed PRECOPY_INFO in STOP_COPY", { () throws(VFIOError) in try fd.precopyInfo() }) {
            c.expectEqual(error, .notInPreCopy(device: source.name), "typed PRECOPY_INFO in STOP_COPY")
        }
    }

    func stopCopyRefusesPreCopy(_ c: inout VFIOCheck) throws {
        // The typed API never sends it.
        if let error = c.expectError("typed STOP_COPY -> PRE_COPY", { () throws(VFIOError) in try source.setState(.preCopy) }) {
            c.expectEqual(error, .forbiddenTransition(device: source.name, from: .stopCopy, to: .preCopy), "typed STOP_COPY -> PRE_COPY")
        }
        // Kernels without the FSM fix spin forever on it: ask it under the caller's guard.
        let client = sourceClient
        switch options.guardedRequest({ client.rawSetState(VFIODeviceState.preCopy.rawValue).errno }) {
        case .returned(let errno):
            c.expectErrno(errno, .invalidArgument, "STOP_COPY -> PRE_COPY")
        case .hung:
            hung = true
            throw VFIOCheckAbort("STOP_COPY -> PRE_COPY did not return (a kernel without the FSM fix): the device is wedged")
        case .failed(let what):
            throw VFIOCheckAbort("STOP_COPY -> PRE_COPY gave no answer: \(what)")
        }
        let toP2P = sourceClient.rawSetState(VFIODeviceState.preCopyP2P.rawValue)
        c.expectErrno(toP2P.errno, .invalidArgument, "STOP_COPY -> PRE_COPY_P2P")
        c.expectEqual(toP2P.reply?.deviceState, VFIODeviceState.preCopyP2P.rawValue, "failed SET echoes the requested state")
        c.expectEqual(toP2P.reply?.dataFD, -1, "failed SET data_fd")
        c.expectEqual(try source.deviceState(), .stopCopy, "state after the refused requests")
        let same = sourceClient.rawSetState(VFIODeviceState.stopCopy.rawValue)
        c.expectSuccess(same.errno, "STOP_COPY -> STOP_COPY")
        c.expectEqual(same.reply?.dataFD, -1, "no-op data_fd")
        if let fd = saveFD {
            c.expectEqual(try c.require(fd.rawRead(count: 64), "read after the no-op").count, 0, "save fd still at its end")
        }
    }

    func sessionEndDisablesFD(_ c: inout VFIOCheck) throws {
        guard let fd = saveFD else { throw VFIOCheckAbort("no save fd") }
        c.expect(try source.setState(.stop) == nil, "STOP_COPY -> STOP returned a data fd")
        c.expectErrno(fd.rawRead(count: 64), .operationNotSupportedByDevice, "read on the ended session's fd")
        if let error = c.expectError("typed read on the ended session's fd", { () throws(VFIOError) in try typedDrain(fd) }) {
            c.expectEqual(error.errno, .operationNotSupportedByDevice, "typed read on the ended session's fd")
        }
        saveFD = nil
    }

    func stopToStopCopyFreshFD(_ c: inout VFIOCheck) throws {
        c.expectEqual(try source.deviceState(), .stop, "source state")
        guard let fd = try source.setState(.stopCopy) else { throw VFIOCheckAbort("STOP -> STOP_COPY opened no data fd") }
        let (bytes, reads) = try c.require(rawDrain(fd), "read")
        c.expectEqual(reads, [streamSize, 0], "read sizes (all at once, then the end)")
        c.expect(
            bytes == sourceStream,
            "the fresh fd's state differs from the PRE_COPY+STOP_COPY stream: \(Self.firstDifference(bytes, sourceStream))")
        try source.setState(.running)
    }

    // MARK: - The destination

    func resumeDestination(_ c: inout VFIOCheck) throws {
        guard sourceStream.count == streamSize else { throw VFIOCheckAbort("no source stream") }
        guard let fd = try destination.setState(.resuming) else { throw VFIOCheckAbort("RUNNING -> RESUMING opened no data fd") }
        c.expectEqual(fd.direction, .resume, "data fd direction")
        let flags = try c.require(fd.descriptorFlags(), "fcntl on the resume fd")
        c.expectEqual(flags, VFIODescriptorFlags(closeOnExec: true, access: .writeOnly), "resume fd flags")
        c.expectErrno(fd.rawPwrite(), .illegalSeek, "pwrite")
        c.expectErrno(fd.rawRead(count: 1), .badFileDescriptor, "read on the write-only resume fd")
        c.expectErrno(fd.rawPrecopyInfo(), .inappropriateIOCTLForDevice, "PRECOPY_INFO on the resume fd")
        // Any segmentation is accepted, including pieces that split the header.
        var offset = 0
        for size in [5, 19, 40, streamSize - 64] {
            try fd.write(Array(sourceStream[offset..<(offset + size)]))
            offset += size
        }
        c.expect(try destination.setState(.stop) == nil, "RESUMING -> STOP returned a data fd")
        c.expectErrno(fd.rawWrite([]), .operationNotSupportedByDevice, "empty write after the session ended")
        // Ending the session also rewinds the file, so the size limit (ENOMEM) no longer gets in first.
        c.expectErrno(fd.rawWrite([0]), .operationNotSupportedByDevice, "1-byte write after the session ended")
        // mtty checks the size against the (rewound) position before it looks at the session.
        c.expectErrno(fd.rawWrite(sourceStream + [0]), .noMemory, "\(streamSize + 1)-byte write after the session ended")
        try destination.setState(.running)
        c.expectEqual(try destination.deviceState(), .running, "destination state")
    }

    func destinationReadback(_ c: inout VFIOCheck) throws {
        let after = try readStateOut(destination, &c)
        c.expect(after == sourceStream, "destination state differs from the source's: \(Self.firstDifference(after, sourceStream))")
        c.expect(after != destinationBefore, "destination state did not change")
    }

    // MARK: - Resume errors

    func resumeBadHeader(_ c: inout VFIOCheck) throws {
        guard sourceStream.count == streamSize else { throw VFIOCheckAbort("no source stream") }
        let good = Array(sourceStream[..<Self.headerSize])
        func with(_ value: UInt32, at offset: Int) -> [UInt8] {
            var header = good
            LittleEndianBytes.store(value, into: &header, at: offset)
            return header
        }
        var badMagic = good
        badMagic[0] ^= 0xFF
        let cases: [(String, [UInt8])] = [
            ("bad magic", badMagic), ("major version 2", with(2, at: 8)), ("minor version 1", with(1, at: 12)),
            ("nr_ports \(options.ports - 1)", with(UInt32(options.ports - 1), at: 16)), ("flags 1", with(1, at: 20))
        ]
        for (what, header) in cases {
            let fd = try enterResuming(destination)
            c.expectErrno(fd.rawWrite(header), .badAddress, "write header with \(what)")
        }
        // Split header: the check runs when the header completes.
        let fd = try enterResuming(destination)
        c.expectEqual(try c.require(fd.rawWrite(Array(badMagic[..<10])), "first part of a bad header"), 10, "first part written")
        c.expectErrno(fd.rawWrite(Array(badMagic[10...])), .badAddress, "write completing a bad header")
        // The typed API reports it.
        let typed = try enterResuming(destination)
        if let error = c.expectError("typed write of a bad header", { () throws(VFIOError) in try typed.write(badMagic) }) {
            c.expectEqual(error.errno, .badAddress, "typed write of a bad header")
        }
        try destination.reset()
        c.expectEqual(try destination.deviceState(), .running, "state after reset")
    }

    /// mtty counts the bytes of a write it failed with EFAULT, and RESUMING → STOP does not check the header
    /// again: a client must treat EFAULT as fatal itself.
    func resumeBadHeaderConsumed(_ c: inout VFIOCheck) throws {
        var stream = sourceStream
        stream[0] ^= 0xFF
        let fd = try enterResuming(destination)
        c.expectErrno(fd.rawWrite(Array(stream[..<Self.headerSize])), .badAddress, "write bad header")
        let rest = Array(stream[Self.headerSize...])
        c.expectEqual(try c.require(fd.rawWrite(rest), "write the ports after EFAULT"), rest.count, "ports written after the bad header")
        c.expectErrno(fd.rawWrite([0]), .noMemory, "one byte more: the bad header's bytes counted")
        c.expectSuccess(
            destinationClient.rawSetState(VFIODeviceState.stop.rawValue).errno, "RESUMING -> STOP after a bad header and a full size")
        try destination.reset()
    }

    func resumeOverflow(_ c: inout VFIOCheck) throws {
        let fd = try enterResuming(destination)
        c.expectErrno(fd.rawWrite(sourceStream + [0]), .noMemory, "write \(streamSize + 1) bytes")
        try rawWriteAll(fd, sourceStream)
        c.expectErrno(fd.rawWrite([0]), .noMemory, "one byte past the end")
        c.expectSuccess(fd.rawWrite([]), "an empty write on a live, full fd")
        c.expect(try destination.setState(.stop) == nil, "RESUMING -> STOP returned a data fd")
        try destination.reset()
    }

    func resumeShort(_ c: inout VFIOCheck) throws {
        let fd = try enterResuming(destination)
        let short = 50
        try rawWriteAll(fd, Array(sourceStream[..<short]))
        let stop = destinationClient.rawSetState(VFIODeviceState.stop.rawValue)
        c.expectErrno(stop.errno, .invalidArgument, "RESUMING -> STOP after \(short) bytes")
        c.expectEqual(stop.reply?.deviceState, VFIODeviceState.stop.rawValue, "failed SET echoes the requested state")
        c.expectEqual(stop.reply?.dataFD, -1, "failed SET data_fd")
        c.expectEqual(try destination.deviceState(), .resuming, "GET after the failed SET")
        // The typed API reads the real state back after the failure.
        if let error = c.expectError(
            "typed RESUMING -> STOP after \(short) bytes", { () throws(VFIOError) in try destination.setState(.stop) })
        {
            let want = VFIOError.setStateFailed(device: destination.name, requested: .stop, errno: .invalidArgument, actual: .resuming)
            c.expectEqual(error, want, "typed RESUMING -> STOP after \(short) bytes")
        }
        // The session survives the failed load: the rest can still be written and loaded.
        try fd.write(Array(sourceStream[short...]))
        c.expect(try destination.setState(.stop) == nil, "RESUMING -> STOP once complete returned a data fd")
        // And a short resume aborted by reset.
        let second = try enterResuming(destination)
        try rawWriteAll(second, Array(sourceStream[..<short]))
        try destination.reset()
        c.expectEqual(try destination.deviceState(), .running, "state after reset")
        c.expectErrno(second.rawWrite([]), .operationNotSupportedByDevice, "write after reset")
    }

    func resetDisablesSaveFD(_ c: inout VFIOCheck) throws {
        try source.reset()
        guard let fd = try source.setState(.preCopy) else { throw VFIOCheckAbort("RUNNING -> PRE_COPY opened no data fd") }
        try source.reset()
        c.expectEqual(try source.deviceState(), .running, "state after reset")
        c.expectErrno(fd.rawRead(count: 64), .operationNotSupportedByDevice, "read after reset")
        // The state check comes before the disabled-file check.
        c.expectErrno(fd.rawPrecopyInfo(), .invalidArgument, "PRECOPY_INFO after reset (device RUNNING)")
        // A new session does not revive the old fd.
        guard let fresh = try source.setState(.preCopy) else { throw VFIOCheckAbort("RUNNING -> PRE_COPY opened no data fd") }
        c.expectErrno(fd.rawPrecopyInfo(), .operationNotSupportedByDevice, "PRECOPY_INFO on the old fd in a new PRE_COPY session")
        c.expectErrno(fd.rawRead(count: 64), .operationNotSupportedByDevice, "read on the old fd in a new PRE_COPY session")
        c.expectEqual(try c.require(fresh.rawRead(count: 64), "read the new fd").count, Self.headerSize, "the new session's header")
        try source.reset()
    }

    // MARK: - State pairs

    /// For each requested state: reset, walk to `current` (one SET from RUNNING), then ask; the result,
    /// the new fd and its access mode, the state GET reports, and whether a held data fd survived, all
    /// as the reference's flags-7 table says.
    func statePairs(from current: VFIODeviceState, _ c: inout VFIOCheck) throws {
        let device = destination
        let client = destinationClient
        for requested in VFIOFlags7Reference.columns {
            let pair = "\(current)->\(requested)"
            guard let expected = VFIOFlags7Reference.outcome(from: current, to: requested) else {
                throw VFIOCheckAbort("\(pair): not in the reference table")
            }
            try device.reset()
            var held: VFIOMigrationDataFD?
            if current != .running {
                let walk = client.rawSetState(current.rawValue)
                guard walk.errno == nil else { throw VFIOCheckAbort("\(pair): RUNNING -> \(current): \(walk)") }
                held = walk.dataFD
            }
            if current == .resuming, let fd = held {
                // Leaving RESUMING loads the state: give it a whole one.
                try rawWriteAll(fd, sourceStream)
            }
            let answer = client.rawSetState(requested.rawValue)
            let after = try device.deviceState()
            switch expected {
            case .einval:
                c.expectErrno(answer.errno, .invalidArgument, "\(pair) result")
                c.expectEqual(answer.reply?.dataFD, -1, "\(pair) data_fd")
                c.expectEqual(after, current, "\(pair) state after refusal")
            case .noop, .path:
                c.expectSuccess(answer.errno, "\(pair) (\(expected))")
                c.expectEqual(after, requested, "\(pair) state")
                let wantsFD: Bool = if case .path(_, let newFD) = expected { newFD } else { false }
                c.expect((answer.dataFD != nil) == wantsFD, "\(pair) (\(expected)): \(answer), want \(wantsFD ? "a new fd" : "-1")")
                if let fresh = answer.dataFD {
                    let flags = try c.require(fresh.descriptorFlags(), "\(pair) fcntl")
                    let access: VFIODescriptorFlags.Access = requested == .resuming ? .writeOnly : .readOnly
                    c.expectEqual(flags, VFIODescriptorFlags(closeOnExec: true, access: access), "\(pair) fd flags")
                }
            }
            if let fd = held {
                let kept = expected.isRefusal || VFIOFlags7Reference.keepsSession(from: current, to: requested)
                let probe = current == .resuming ? fd.rawWrite([]).failureErrno : fd.rawRead(count: 1).failureErrno
                if kept {
                    c.expect(probe != .operationNotSupportedByDevice, "\(pair): the held data fd was disabled")
                } else {
                    c.expectErrno(probe, .operationNotSupportedByDevice, "\(pair): held data fd after leaving the session")
                }
            }
        }
        try device.reset()
    }
}
