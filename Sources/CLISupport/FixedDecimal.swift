/// `value` with `digits` decimals, without Foundation's locale-dependent formatting.
public func fixedDecimal(_ value: Double, digits: Int) -> String {
    guard value.isFinite else { return String(value) }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return String(value) }
    let whole = UInt64(scaled)
    let integer = whole / UInt64(scale)
    var text = (value < 0 && whole > 0 ? "-" : "") + String(integer)
    if digits > 0 {
        let fraction = String(whole % UInt64(scale))
        text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
    return text
}
