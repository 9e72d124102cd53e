import DeviceMatch
import FuzzSupport
import LibFuzzerDriver

// The match-table parser the build plugin's compiler runs on a vendor's devices.matchtable,
// and the Swift source it generates from the rules it accepts.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ pointer: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = fuzzBytes(pointer, size)
    let text = String(decoding: data, as: UTF8.self)
    guard let rules = try? PCIMatchTableFile.parse(text) else { return 0 }
    _ = PCIMatchTableFile.swiftSource(for: rules, typeName: "FuzzDevices", sourceName: "fuzz.matchtable")
    return 0
}

runLibFuzzer(fuzzOne)
