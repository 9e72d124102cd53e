import CLibPCI
import CPCIShim

#if canImport(Glibc)
import Glibc
#endif

/// One libpci `pci_access`, set up for the sysfs method and never used outside the shim's guards.
///
/// libpci state is not thread-safe and its pointers are not Sendable: an instance lives inside one
/// synchronous call. libpci raises fatal errors through the shim, which turns them into
/// ``PCIDiscoveryError/libpci(operation:message:)``; the process never exits.
final class LibPCIAccess {
    private let access: UnsafeMutablePointer<pci_access>
    private var diag = pcishim_diag()
    /// Names already looked up: a host has many devices with the same ids, and each miss in
    /// pci.ids costs libpci a udev hwdb search (several failed opens).
    private var names: [NameKey: String?] = [:]

    private struct NameKey: Hashable {
        var mode: UInt32
        var a: Int, b: Int, c: Int, d: Int
    }

    init(options: PCIScanOptions) throws(PCIDiscoveryError) {
        guard let access = pci_alloc() else {
            throw .libpci(operation: "pci_alloc", message: "out of memory")
        }
        self.access = access
        pcishim_install_handlers(access)
        // Never PCI_ACCESS_AUTO: its probe sequence ends in raw port I/O (intel-conf1) as root.
        access.pointee.method = PCI_ACCESS_SYS_BUS_PCI.rawValue
        try setParam("sysfs.path", options.sysfsPath)
        if let ids = options.idsFile {
            // libpci frees the path (to_be_freed = 1).
            pci_set_name_list_path(access, strdup(ids), 1)
        }
        if options.deterministicNames {
            access.pointee.id_lookup_mode = 0  // no ~/.pciids-cache
            try setParam("hwdb.disable", "1")
        }
        guard pcishim_init(access, &diag) == 0 else {
            throw .libpci(operation: "pci_init", message: errorText())
        }
    }

    deinit { pci_cleanup(access) }

    private func setParam(_ name: String, _ value: String) throws(PCIDiscoveryError) {
        // pci_set_param copies the value; the casts only drop C's missing const.
        let rc = name.withCString { n in
            value.withCString { v in
                pci_set_param(access, UnsafeMutablePointer(mutating: n), UnsafeMutablePointer(mutating: v))
            }
        }
        if rc != 0 { throw .libpci(operation: "pci_set_param", message: "unknown parameter \(name)") }
    }

    /// What libpci reads for one device.
    struct Fields {
        var vendorID: UInt16
        var deviceID: UInt16
        /// Base class and subclass (`0x0200`).
        var deviceClass: UInt16
    }

    /// Identifies one device through `pci_get_dev` + `pci_fill_info(IDENT | CLASS)`, which read
    /// `vendor`, `device` and `class`; the device is freed before returning.
    func fields(of address: PCIAddress) throws(PCIDiscoveryError) -> Fields {
        guard
            let dev = pci_get_dev(
                access, Int32(bitPattern: address.domain), Int32(address.bus),
                Int32(address.device), Int32(address.function))
        else { throw .libpci(operation: "pci_get_dev", message: "out of memory") }
        defer { pci_free_dev(dev) }
        var known: Int32 = 0
        guard pcishim_fill_info(dev, PCI_FILL_IDENT | PCI_FILL_CLASS, &known, &diag) == 0 else {
            throw .libpci(operation: "pci_fill_info(\(address))", message: errorText())
        }
        let d = dev.pointee
        return Fields(vendorID: d.vendor_id, deviceID: d.device_id, deviceClass: d.device_class)
    }

    /// `pci_lookup_name` without numbers: nil when the database does not know the id.
    func name(_ mode: pci_lookup_mode, _ a: Int, _ b: Int = 0, _ c: Int = 0, _ d: Int = 0) throws(PCIDiscoveryError) -> String? {
        let key = NameKey(mode: mode.rawValue, a: a, b: b, c: c, d: d)
        if let known = names[key] { return known }
        let name = try lookUpName(mode, a, b, c, d)
        names[key] = name
        return name
    }

    private func lookUpName(_ mode: pci_lookup_mode, _ a: Int, _ b: Int, _ c: Int, _ d: Int) throws(PCIDiscoveryError) -> String? {
        var buf = [CChar](repeating: 0, count: 256)
        var result: UnsafePointer<CChar>? = nil
        let flags = Int32(bitPattern: mode.rawValue | PCI_LOOKUP_NO_NUMBERS.rawValue)
        guard
            pcishim_lookup_name(
                access, &buf, Int32(buf.count), flags, Int32(a), Int32(b), Int32(c), Int32(d),
                &result, &diag) == 0
        else { throw .libpci(operation: "pci_lookup_name", message: errorText()) }
        guard let result else { return nil }
        let name = String(cString: result)
        return name.hasPrefix("<pci_lookup_name") ? nil : name
    }

    /// The last fatal error's message; some libpci messages end in a newline.
    private func errorText() -> String {
        var text = withUnsafeBytes(of: &diag.error) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        while text.last == "\n" { text.removeLast() }
        return text
    }
}
