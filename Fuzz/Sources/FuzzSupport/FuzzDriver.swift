// Each target's main.swift defines `LLVMFuzzerTestOneInput` with @_cdecl; libFuzzer (linked
// into the targets with -sanitize=fuzzer) brings `main` and calls it once per input. SwiftPM
// renames main.swift's own entry point, which never runs: a target keeps its state in static
// properties (initialized on first use), not in top-level variables.

/// The input libFuzzer passes, as raw bytes.
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: data, count: size)
}
