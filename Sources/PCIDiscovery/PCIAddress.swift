/// The address of a PCI function: domain, bus, device and function, as the kernel names it in
/// sysfs (`0000:3b:00.1`).
public struct PCIAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The PCI segment (domain); the kernel allows up to 0x7fffffff (VMD uses 0x10000 and up).
    public var domain: UInt32
    /// The bus number.
    public var bus: UInt8
    /// The device (slot) number, 0–31.
    public var device: UInt8
    /// The function number, 0–7.
    public var function: UInt8

    /// Creates an address; returns nil when the device or function number is out of range.
    public init?(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        guard device < 32, function < 8, domain <= 0x7fff_ffff else { return nil }
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses `DDDD:BB:DD.F` as sysfs writes it, or `BB:DD.F` (domain 0) as `lspci` prints it.
    /// Hex digits may be upper or lower case; nothing else is accepted.
    public init?(_ text: some StringProtocol) {
        // On the UTF-8 bytes, without allocating: this runs for every entry and link of a tree.
        // Up to four fields separated by ':' ':' '.', each of at most eight hex digits.
        var values: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
        var digits: (Int, Int, Int, Int) = (0, 0, 0, 0)
        var separators: UInt32 = 0  // the separators seen, one byte each, first in the lowest
        var field = 0
        for b in text.utf8 {
            let digit: UInt32
            switch b {
            case 0x30...0x39: digit = UInt32(b - 0x30)
            case 0x61...0x66: digit = UInt32(b - 0x61 + 10)
            case 0x41...0x46: digit = UInt32(b - 0x41 + 10)
            case UInt8(ascii: ":"), UInt8(ascii: "."):
                guard field < 3 else { return nil }
                separators |= UInt32(b) << (8 * UInt32(field))
                field += 1
                continue
            default: return nil
            }
            switch field {
            case 0:
                guard digits.0 < 8 else { return nil }
                values.0 = values.0 << 4 | digit
                digits.0 += 1
            case 1:
                guard digits.1 < 8 else { return nil }
                values.1 = values.1 << 4 | digit
                digits.1 += 1
            case 2:
                guard digits.2 < 8 else { return nil }
                values.2 = values.2 << 4 | digit
                digits.2 += 1
            default:
                guard digits.3 < 8 else { return nil }
                values.3 = values.3 << 4 | digit
                digits.3 += 1
            }
        }
        let colon = UInt32(UInt8(ascii: ":"))
        let dot = UInt32(UInt8(ascii: "."))
        let domain: (value: UInt32, digits: Int)
        let bus: (value: UInt32, digits: Int)
        let device: (value: UInt32, digits: Int)
        let function: (value: UInt32, digits: Int)
        switch (field, separators) {
        case (3, colon | colon << 8 | dot << 16):
            (domain, bus, device, function) = ((values.0, digits.0), (values.1, digits.1), (values.2, digits.2), (values.3, digits.3))
        case (2, colon | dot << 8):
            (domain, bus, device, function) = ((0, 1), (values.0, digits.0), (values.1, digits.1), (values.2, digits.2))
        default: return nil
        }
        guard domain.digits >= 1, bus.digits >= 1, bus.digits <= 2, device.digits >= 1, device.digits <= 2,
            function.digits == 1
        else { return nil }
        self.init(
            domain: domain.value, bus: UInt8(bus.value), device: UInt8(device.value),
            function: UInt8(function.value))
    }

    /// `0000:3b:00.1`: the domain with at least four digits, lower-case hex, as in sysfs.
    public var description: String {
        // Written into the string's own storage: this runs several times per device.
        var domainDigits = 4
        while domainDigits < 8, domain >> (4 * UInt32(domainDigits)) != 0 { domainDigits += 1 }
        return String(unsafeUninitializedCapacity: domainDigits + 8) { out in
            var i = 0
            for shift in stride(from: 4 * (domainDigits - 1), through: 0, by: -4) {
                out[i] = hexDigit(domain >> UInt32(shift))
                i += 1
            }
            out[i] = UInt8(ascii: ":")
            out[i + 1] = hexDigit(UInt32(bus >> 4))
            out[i + 2] = hexDigit(UInt32(bus))
            out[i + 3] = UInt8(ascii: ":")
            out[i + 4] = hexDigit(UInt32(device >> 4))
            out[i + 5] = hexDigit(UInt32(device))
            out[i + 6] = UInt8(ascii: ".")
            out[i + 7] = hexDigit(UInt32(function))
            return i + 8
        }
    }

    /// Orders by domain, bus, device, function, as sysfs and lspci list devices.
    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool {
        (lhs.domain, lhs.bus, lhs.device, lhs.function) < (rhs.domain, rhs.bus, rhs.device, rhs.function)
    }
}

/// The lower-case ASCII hex digit of the low four bits of `value`.
@inline(__always)
func hexDigit(_ value: UInt32) -> UInt8 {
    let nibble = UInt8(truncatingIfNeeded: value & 0xf)
    return nibble < 10 ? 0x30 + nibble : 0x61 - 10 + nibble
}

/// Lower-case hex, zero-padded to `width` digits, without `0x`.
func hexString<T: BinaryInteger>(_ value: T, width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
