#if canImport(Glibc)
import Glibc
#endif

// Each target's main.swift defines `LLVMFuzzerTestOneInput` with @_cdecl and ends with
// `runLibFuzzer(fuzzOne)`: SwiftPM gives an executable the main of its main.swift (libFuzzer's
// own main, linked from the same archive, is never used), so the target hands the process to
// libFuzzer's driver itself.

// swift-format-ignore: AlwaysUseLowerCamelCase
// (libFuzzer's C entry point keeps its C name)
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Runs libFuzzer with `target` as LLVMFuzzerTestOneInput; the command line is libFuzzer's
/// (corpus directories, `-max_total_time=`, or inputs to replay). Exits with its status.
public func runLibFuzzer(_ target: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
}

/// The input libFuzzer passes, as raw bytes.
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: data, count: size)
}
