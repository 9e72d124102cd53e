import FuzzSupport
import LibFuzzerDriver
import MigrationStream

@testable import MigrationCore

// Multifd on the destination: the channel classifier (main stream vs channels, by their first
// bytes), then each channel as its receiver reads it: the 64-byte MultiFDInit, then device-state
// packet headers, each buffer's VFIO packet header and its data. Input: a mode byte (low two
// bits: how many channels are expected), then three connections framed be32 length + bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    var input = FuzzInput(data)
    let mode = input.byte()
    let expected = Int(mode & 3)
    let parts = [input.part(), input.part(), input.rest()]
    let maxPacket = mode & 4 == 0 ? 1 << 20 : 64
    for part in parts {
        _ = try? MultiFDInit.decode(Array(part.prefix(MultiFDInit.encodedLength)))
        _ = try? MultiFDDeviceStatePacketHeader.decode(
            Array(part.prefix(MultiFDDeviceStatePacketHeader.encodedLength)), maxPacketSize: maxPacket)
        _ = try? VFIODeviceStatePacketHeader.decode(part)
    }
    let connections = parts.map { MemoryConnection($0, pieceSize: Int(mode >> 4)) }
    guard let (_, channels) = try? MultifdChannels.classify(connections, count: expected, readTimeout: .seconds(1)) else { return 0 }
    for channel in channels {
        let reader = StreamReader(source: channel.connection, bufferSize: 4096)
        while let header = try? reader.readMultiFDDeviceStatePacketHeader(maxPacketSize: maxPacket) {
            guard let buffer = try? reader.readBytes(Int(header.nextPacketSize), "a device-state buffer"),
                let vfio = try? VFIODeviceStatePacketHeader.decode(buffer)
            else { break }
            _ = vfio.isConfigState
        }
    }
    return 0
}

runLibFuzzer(fuzzOne)
