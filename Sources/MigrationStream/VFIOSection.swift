/// The be64 tags inside a VFIO device's section bodies (QEMU hw/vfio `VFIO_MIG_FLAG_*`):
/// `0xffffffff_ef10_XXXX`.
public enum VFIOSectionTag: UInt64, Sendable, CaseIterable, CustomStringConvertible {
    /// Ends a section body.
    case endOfState = 0xFFFF_FFFF_EF10_0001
    /// The device's config-space vmstate follows (FULL section), then END_OF_STATE.
    case configState = 0xFFFF_FFFF_EF10_0002
    /// The START section's marker, followed by END_OF_STATE.
    case setupState = 0xFFFF_FFFF_EF10_0003
    /// A data chunk follows: be64 size, then that many bytes of device state.
    case dataState = 0xFFFF_FFFF_EF10_0004
    /// Ends a PART body and says the device's initial precopy data has all been sent
    /// (the destination acknowledges switchover once it has loaded it).
    case initDataSent = 0xFFFF_FFFF_EF10_0005
    /// Multifd transfer with config loaded after the iterations: the FULL body's only tag.
    case configLoadReady = 0xFFFF_FFFF_EF10_0006
    /// Switchover's own, sent only to a Switchover peer (docs/wire-format.md §7): starts a PART
    /// body whose data is new initial data (the source device reported `VFIO_PRECOPY_INFO_REINIT`);
    /// the destination withdraws this device's switchover acknowledgement until the next
    /// INIT_DATA_SENT. Not a terminator: DATA and END_OF_STATE or INIT_DATA_SENT follow.
    case reinit = 0xFFFF_FFFF_EF10_5301

    public var description: String {
        switch self {
        case .endOfState: "END_OF_STATE"
        case .configState: "CONFIG_STATE"
        case .setupState: "SETUP_STATE"
        case .dataState: "DATA_STATE"
        case .initDataSent: "INIT_DATA_SENT"
        case .configLoadReady: "CONFIG_LOAD_READY"
        case .reinit: "REINIT"
        }
    }

    /// The tag's eight bytes as they appear on the wire.
    public var bytes: [UInt8] { bigEndianBytes(rawValue) }

    /// The suffix of the idstr QEMU registers VFIO devices under ("0000:00:05.0/vfio").
    public static let idstrSuffix = "/vfio"
}

extension StreamWriter {
    /// Writes one VFIO tag.
    public func writeVFIOTag(_ tag: VFIOSectionTag) throws {
        try writeBE64(tag.rawValue)
    }

    /// Writes a VFIO data chunk header: DATA_STATE and the be64 size of the bytes that follow.
    public func writeVFIODataChunkHeader(size: UInt64) throws {
        try writeVFIOTag(.dataState)
        try writeBE64(size)
    }

    /// Writes a whole VFIO data chunk: header and bytes.
    public func writeVFIODataChunk(_ bytes: UnsafeRawBufferPointer) throws {
        try writeVFIODataChunkHeader(size: UInt64(bytes.count))
        try writeBytes(bytes)
    }
}

extension StreamReader {
    /// Reads one VFIO tag; an unknown be64 is a ``StreamError/badSectionBody(offset:idstr:reason:)``
    /// naming `idstr`.
    public func readVFIOTag(idstr: String = "vfio") throws -> VFIOSectionTag {
        let at = offset
        let raw = try readBE64("a VFIO tag")
        guard let tag = VFIOSectionTag(rawValue: raw) else {
            throw StreamError.badSectionBody(offset: at, idstr: idstr, reason: "unknown VFIO tag 0x\(String(raw, radix: 16))")
        }
        return tag
    }
}

/// What one VFIO section body held, item by item.
public struct VFIOBodySummary: Sendable, Hashable {
    /// One item of a VFIO body, in stream order.
    public enum Item: Sendable, Hashable, CustomStringConvertible {
        /// A tag on its own (SETUP_STATE, END_OF_STATE, INIT_DATA_SENT, CONFIG_LOAD_READY).
        case tag(VFIOSectionTag)
        /// A DATA_STATE chunk of this many bytes.
        case data(UInt64)
        /// CONFIG_STATE and the config vmstate of this many bytes (up to END_OF_STATE).
        case config(Int)

        public var description: String {
            switch self {
            case .tag(let t): t.description
            case .data(let n): "DATA(\(n))"
            case .config(let n): "CONFIG_STATE(\(n))"
            }
        }
    }

    /// The tags, chunks and config blocks, in stream order.
    public var items: [Item]

    public init(items: [Item]) { self.items = items }
}

/// Reads VFIO section bodies (QEMU's format, reference §5): a loop of be64 tags until a
/// terminator (END_OF_STATE, INIT_DATA_SENT, CONFIG_LOAD_READY), DATA chunks streamed through.
///
/// The CONFIG_STATE block of a FULL section is the vfio-pci config vmstate, which does not say
/// its own length. The parser finds its end by scanning for END_OF_STATE followed by a valid
/// footer for the section id and a plausible next record header (``StreamWalker`` supplies the
/// check), looking no further ahead than the reader's buffer.
public final class VFIOBodyParser: SectionBodyParser {
    /// The largest DATA chunk accepted (QEMU sends at most 1 MiB per chunk by default).
    public let maxChunkSize: UInt64
    /// A parser refusing DATA chunks over `maxChunkSize` bytes (1 GiB by default).
    public init(maxChunkSize: UInt64 = 1 << 30) {
        self.maxChunkSize = maxChunkSize
    }

    /// Sections whose idstr ends in "/vfio", as QEMU registers its VFIO devices.
    public func owns(_ binding: SectionBinding) -> Bool {
        binding.idstr.hasSuffix(VFIOSectionTag.idstrSuffix)
    }

    public func parseBody(_ body: SectionBodyReader) throws -> SectionBodySummary {
        var items: [VFIOBodySummary.Item] = []
        let idstr = body.header.binding.idstr
        while true {
            let at = body.offset
            let raw = try body.readBE64("a VFIO tag")
            guard let tag = VFIOSectionTag(rawValue: raw) else {
                throw body.failure("unknown VFIO tag 0x\(String(raw, radix: 16))", at: at)
            }
            switch tag {
            case .endOfState, .initDataSent, .configLoadReady:
                items.append(.tag(tag))
                return .vfio(VFIOBodySummary(items: items))
            case .reinit:
                items.append(.tag(tag))
            case .setupState:
                items.append(.tag(tag))
                let endAt = body.offset
                let next = try body.readBE64("END_OF_STATE after SETUP_STATE")
                guard next == VFIOSectionTag.endOfState.rawValue else {
                    throw body.failure("expected END_OF_STATE after SETUP_STATE, found 0x\(String(next, radix: 16))", at: endAt)
                }
                items.append(.tag(.endOfState))
                return .vfio(VFIOBodySummary(items: items))
            case .dataState:
                let sizeAt = body.offset
                let size = try body.readBE64("the size of a VFIO data chunk")
                guard size <= maxChunkSize else {
                    throw StreamError.lengthTooLarge(
                        offset: sizeAt, field: "VFIO data chunk of \(idstr)",
                        length: size, limit: maxChunkSize)
                }
                try body.copy(size, "a VFIO data chunk of \(idstr)")
                items.append(.data(size))
            case .configState:
                let start = body.bytesRead
                try body.consumeUntilFooter(after: VFIOSectionTag.endOfState.bytes, "END_OF_STATE after the VFIO config state")
                items.append(.config(body.bytesRead - start))
                _ = try body.readBE64("END_OF_STATE")
                items.append(.tag(.endOfState))
                return .vfio(VFIOBodySummary(items: items))
            }
        }
    }
}
