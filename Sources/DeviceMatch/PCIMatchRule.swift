/// The identity of a PCI function as far as matching is concerned: the ids from its
/// configuration space and the kernel driver bound to it.
public struct PCIIdentity: Sendable, Hashable {
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// The 24-bit class code: base class, subclass and programming interface (0x020000 for Ethernet).
    public var classCode: UInt32
    /// The bound kernel driver's sysfs name (`mlx5_vfio_pci`), nil when unbound.
    public var driver: String?

    public init(
        vendorID: UInt16, deviceID: UInt16,
        subsystemVendorID: UInt16? = nil, subsystemDeviceID: UInt16? = nil,
        classCode: UInt32 = 0, driver: String? = nil
    ) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
        self.classCode = classCode
        self.driver = driver
    }
}

/// One entry of a vendor module's match table. A nil field matches anything.
///
/// A rule that names more fields is more specific; when several vendor modules match one
/// device, the most specific rule wins (see ``PCIMatchTable/bestMatch(for:)``).
public struct PCIMatchRule: Sendable, Hashable, CustomStringConvertible {
    public var vendorID: UInt16?
    public var deviceID: UInt16?
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// Class code to compare under ``classMask``.
    public var classCode: UInt32?
    /// Which bits of the class code are compared; 0xFFFFFF compares all three bytes.
    public var classMask: UInt32
    /// The kernel driver the device must be bound to.
    public var driver: String?

    public init(
        vendorID: UInt16? = nil, deviceID: UInt16? = nil,
        subsystemVendorID: UInt16? = nil, subsystemDeviceID: UInt16? = nil,
        classCode: UInt32? = nil, classMask: UInt32 = 0xFF_FFFF, driver: String? = nil
    ) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
        self.classCode = classCode
        self.classMask = classMask
        self.driver = driver
    }

    /// Whether `identity` satisfies every field this rule names.
    public func matches(_ identity: PCIIdentity) -> Bool {
        if let v = vendorID, v != identity.vendorID { return false }
        if let d = deviceID, d != identity.deviceID { return false }
        if let sv = subsystemVendorID, sv != identity.subsystemVendorID { return false }
        if let sd = subsystemDeviceID, sd != identity.subsystemDeviceID { return false }
        if let c = classCode, (c & classMask) != (identity.classCode & classMask) { return false }
        if let drv = driver, drv != identity.driver { return false }
        return true
    }

    /// How specific the rule is: ids weigh more than the class, the class more than the driver alone.
    public var specificity: Int {
        var score = 0
        if vendorID != nil { score += 16 }
        if deviceID != nil { score += 16 }
        if subsystemVendorID != nil { score += 8 }
        if subsystemDeviceID != nil { score += 8 }
        if classCode != nil { score += classMask.nonzeroBitCount / 8 }
        if driver != nil { score += 4 }
        return score
    }

    public var description: String {
        func hex<T: BinaryInteger>(_ v: T?, _ width: Int) -> String {
            guard let v else { return "*" }
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        var parts = ["\(hex(vendorID, 4)):\(hex(deviceID, 4))"]
        if subsystemVendorID != nil || subsystemDeviceID != nil {
            parts.append("subsystem \(hex(subsystemVendorID, 4)):\(hex(subsystemDeviceID, 4))")
        }
        if let c = classCode { parts.append("class \(hex(c, 6))/\(hex(classMask, 6))") }
        if let d = driver { parts.append("driver \(d)") }
        return parts.joined(separator: " ")
    }
}

/// What a vendor module declares about itself for discovery and registration.
public struct VendorModuleDescriptor: Sendable, Hashable {
    /// The module's name as shown to operators (`mlx5`, `vfio-pci`).
    public var name: String
    /// The devices it serves.
    public var rules: [PCIMatchRule]
    /// Whether the module serves any VFIO device with migration support (the generic one does).
    public var isGenericFallback: Bool

    public init(name: String, rules: [PCIMatchRule], isGenericFallback: Bool = false) {
        (self.name, self.rules, self.isGenericFallback) = (name, rules, isGenericFallback)
    }
}

/// A set of vendor modules and the rule that picks one for a device.
public struct PCIMatchTable: Sendable {
    public private(set) var modules: [VendorModuleDescriptor]

    public init(_ modules: [VendorModuleDescriptor] = []) {
        self.modules = modules
    }

    public mutating func add(_ module: VendorModuleDescriptor) {
        modules.append(module)
    }

    /// The module whose most specific matching rule is the most specific of all; ties go to
    /// the module added first. The generic fallback is returned only when nothing else matches.
    public func bestMatch(for identity: PCIIdentity) -> (module: VendorModuleDescriptor, rule: PCIMatchRule?)? {
        var best: (module: VendorModuleDescriptor, rule: PCIMatchRule, score: Int)?
        for module in modules where !module.isGenericFallback {
            for rule in module.rules where rule.matches(identity) {
                if rule.specificity > (best?.score ?? -1) {
                    best = (module, rule, rule.specificity)
                }
            }
        }
        if let best { return (best.module, best.rule) }
        if let generic = modules.first(where: { $0.isGenericFallback }) {
            let rule = generic.rules.first(where: { $0.matches(identity) })
            if generic.rules.isEmpty || rule != nil { return (generic, rule) }
        }
        return nil
    }
}
