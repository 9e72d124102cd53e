import DeviceMatch
import MigrationCore
import VFIO

/// A vendor module: which PCI devices it serves, and how it makes a handler for one.
///
/// A vendor ships one of these from its own SwiftPM target (see
/// docs/writing-a-vendor-module.md); a VMM adds it to a ``VFIOVendorRegistry``. Nothing in
/// MigrationCore or in this module changes when a vendor module is added.
public struct VFIOVendorModule: Sendable {
    /// The module's name and match rules (usually compiled from its `devices.matchtable`).
    public var descriptor: VendorModuleDescriptor
    /// Makes the handler that migrates one device. Called once per device, on the caller's thread.
    public var makeHandler: @Sendable (_ device: any VFIOMigrationDevice, _ config: (any VFIOPCIConfigState)?) -> any MigrationHandler

    public init(
        descriptor: VendorModuleDescriptor,
        makeHandler: @escaping @Sendable (_ device: any VFIOMigrationDevice, _ config: (any VFIOPCIConfigState)?) -> any MigrationHandler
    ) {
        self.descriptor = descriptor
        self.makeHandler = makeHandler
    }

    public var name: String { descriptor.name }
}

extension VFIOPCIHandler {
    /// The generic module: QEMU's defaults, for any VFIO device with migration support.
    public static let module = VFIOVendorModule(descriptor: descriptor) { device, config in
        VFIOPCIHandler(device: device, config: config)
    }

    /// The generic module whose handlers get their tuning from `makeTuning`, one per handler.
    public static func module(makeTuning: @escaping @Sendable () -> GenericVFIOPCITuning) -> VFIOVendorModule {
        VFIOVendorModule(descriptor: descriptor) { device, config in
            VFIOPCIHandler(device: device, config: config, tuning: makeTuning())
        }
    }
}

/// What ``VFIOVendorRegistry/register(_:identity:config:in:)`` did.
public struct RegisteredVendorHandler: Sendable {
    /// The registration (idstr "<address>/vfio", instance 0, version 1).
    public var identity: HandlerIdentity
    /// The module that serves the device.
    public var moduleName: String
    public var handler: any MigrationHandler
}

/// Why a device could not be given a handler.
public enum VFIOVendorRegistryError: Error, Sendable, CustomStringConvertible {
    /// No module's rules match the device (not even the generic one's).
    case noModule(device: String, identity: PCIIdentity)

    public var description: String {
        switch self {
        case .noModule(let device, let id):
            let hex = { (v: UInt16) in String(v, radix: 16).leftPadded(4) }
            return "\(device): no vendor module serves \(hex(id.vendorID)):\(hex(id.deviceID)) on driver \(id.driver ?? "(none)")"
        }
    }
}

/// The vendor modules a VMM uses, and the rule that picks one for a device: the most specific
/// match wins; the generic VFIO-PCI module serves the rest.
public struct VFIOVendorRegistry: Sendable {
    public private(set) var modules: [VFIOVendorModule]

    /// The given modules, then `generic` (by default ``VFIOPCIHandler/module``) as the fallback.
    public init(_ modules: [VFIOVendorModule] = [], generic: VFIOVendorModule = VFIOPCIHandler.module) {
        self.modules = modules + [generic]
    }

    /// Adds a vendor module (ahead of the generic fallback).
    public mutating func add(_ module: VFIOVendorModule) {
        modules.insert(module, at: max(0, modules.count - 1))
    }

    /// The match table of every module, for discovery (devprobe).
    public var matchTable: PCIMatchTable { PCIMatchTable(modules.map(\.descriptor)) }

    /// The module that serves a device with this identity, or nil.
    public func module(for identity: PCIIdentity) -> VFIOVendorModule? {
        guard let match = matchTable.bestMatch(for: identity) else { return nil }
        return modules.first { $0.descriptor == match.module }
    }

    /// The one call a VMM makes per device: picks the module, makes its handler and registers
    /// it under QEMU's identity for a VFIO device ("<address>/vfio", instance 0, version 1).
    @discardableResult
    public func register(
        _ device: any VFIOMigrationDevice, identity: PCIIdentity, config: (any VFIOPCIConfigState)? = nil,
        in registry: HandlerRegistry
    ) throws -> RegisteredVendorHandler {
        guard let module = module(for: identity) else {
            throw VFIOVendorRegistryError.noModule(device: device.name, identity: identity)
        }
        let handler = module.makeHandler(device, config)
        let registered = try registry.register(
            handler, idstr: VFIOPCIHandler.idstr(for: device.name), instanceID: 0,
            versionID: VFIOPCIHandler.sectionVersion)
        return RegisteredVendorHandler(identity: registered, moduleName: module.name, handler: handler)
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
