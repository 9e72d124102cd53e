// Arithmetic on figures that come from outside (a peer, a file, a device): it saturates or
// clamps instead of trapping, where an approximate figure is acceptable (sizes shown,
// predictions, pending totals). Where a wrong figure would be wrong data, decoders throw instead.

extension Sequence where Element == UInt64 {
    /// The sum, or `UInt64.max` when it does not fit.
    public var saturatingSum: UInt64 {
        reduce(0) { total, value in
            let (sum, overflow) = total.addingReportingOverflow(value)
            return overflow ? .max : sum
        }
    }
}

extension UInt64 {
    /// `value` rounded down to an integer, clamped to 0...UInt64.max; NaN reads as 0.
    public init(clamping value: Double) {
        if !(value > 0) {
            self = 0
        } else if value >= 18_446_744_073_709_551_616.0 {
            self = .max
        } else {
            self = UInt64(value)
        }
    }
}
