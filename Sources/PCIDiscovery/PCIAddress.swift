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
        // On the UTF-8 bytes: fields separated by ':' ':' '.', each of bounded hex digits.
        var fields: [(value: UInt32, digits: Int)] = [(0, 0)]
        var separators: [UInt8] = []
        for b in text.utf8 {
            let digit: UInt32
            switch b {
            case 0x30...0x39: digit = UInt32(b - 0x30)
            case 0x61...0x66: digit = UInt32(b - 0x61 + 10)
            case 0x41...0x46: digit = UInt32(b - 0x41 + 10)
            case UInt8(ascii: ":"), UInt8(ascii: "."):
                guard separators.count < 3 else { return nil }
                separators.append(b)
                fields.append((0, 0))
                continue
            default: return nil
            }
            let last = fields.count - 1
            guard fields[last].digits < 8 else { return nil }
            fields[last] = (fields[last].value << 4 | digit, fields[last].digits + 1)
        }
        let colon = UInt8(ascii: ":"), dot = UInt8(ascii: ".")
        let domain: (value: UInt32, digits: Int)
        switch separators {
        case [colon, colon, dot]: domain = fields.removeFirst()
        case [colon, dot]: domain = (0, 1)
        default: return nil
        }
        let (bus, device, function) = (fields[0], fields[1], fields[2])
        guard domain.digits >= 1, bus.digits >= 1, bus.digits <= 2, device.digits >= 1, device.digits <= 2,
              function.digits == 1
        else { return nil }
        self.init(domain: domain.value, bus: UInt8(bus.value), device: UInt8(device.value),
                  function: UInt8(function.value))
    }

    /// `0000:3b:00.1`: the domain with at least four digits, lower-case hex, as in sysfs.
    public var description: String {
        // Built by hand: this runs several times per device on trees of thousands.
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var domainDigits = 4
        while domainDigits < 8, domain >> (4 * UInt32(domainDigits)) != 0 { domainDigits += 1 }
        for shift in stride(from: 4 * (domainDigits - 1), through: 0, by: -4) {
            out.append(digits[Int((domain >> UInt32(shift)) & 0xf)])
        }
        out.append(UInt8(ascii: ":"))
        out.append(digits[Int(bus >> 4)])
        out.append(digits[Int(bus & 0xf)])
        out.append(UInt8(ascii: ":"))
        out.append(digits[Int(device >> 4)])
        out.append(digits[Int(device & 0xf)])
        out.append(UInt8(ascii: "."))
        out.append(digits[Int(function)])
        return String(decoding: out, as: UTF8.self)
    }

    /// Orders by domain, bus, device, function, as sysfs and lspci list devices.
    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool {
        (lhs.domain, lhs.bus, lhs.device, lhs.function) < (rhs.domain, rhs.bus, rhs.device, rhs.function)
    }
}

/// Lower-case hex, zero-padded to `width` digits, without `0x`.
func hexString<T: BinaryInteger>(_ value: T, width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
