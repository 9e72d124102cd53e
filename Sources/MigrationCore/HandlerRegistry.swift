import Synchronization

/// Where a handler sits in the emission order (QEMU's `MigrationPriority`): higher first,
/// registration order within a priority.
public struct MigrationPriority: RawRepresentable, Sendable, Hashable, Comparable {
    /// QEMU's `MigrationPriority` value.
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    // QEMU's priorities (include/migration/vmstate.h).
    public static let low = MigrationPriority(rawValue: 1)
    /// Every handler registered without a priority (QEMU's `register_savevm_live`).
    public static let `default` = MigrationPriority(rawValue: 2)
    public static let iommu = MigrationPriority(rawValue: 3)
    public static let pciBus = MigrationPriority(rawValue: 4)
    public static let virtioMem = MigrationPriority(rawValue: 5)
    public static let apic = MigrationPriority(rawValue: 6)
    public static let gicv3ITS = MigrationPriority(rawValue: 7)
    public static let gicv3 = MigrationPriority(rawValue: 8)

    public static func < (a: MigrationPriority, b: MigrationPriority) -> Bool { a.rawValue < b.rawValue }
}

/// One registered handler.
public struct RegisteredHandler: Sendable {
    /// (idstr, instance id, version id) as registered.
    public let identity: HandlerIdentity
    /// The handler.
    public let handler: any MigrationHandler
    /// Its place in the emission order.
    public let priority: MigrationPriority
    /// The section id the source uses for this handler: its registration sequence number,
    /// as QEMU's global counter (ids are source-local; the destination maps by idstr).
    public let sectionID: UInt32
}

/// Why a registration was refused.
public enum RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// (idstr, instance id) is already registered (QEMU exits here).
    case duplicate(idstr: String, instanceID: UInt32)
    /// The idstr is empty or longer than the 255 bytes a section header can carry.
    case invalidIDString(String)

    public var description: String {
        switch self {
        case .duplicate(let idstr, let instance):
            "a handler is already registered as \"\(idstr)\" instance \(instance)"
        case .invalidIDString(let idstr):
            "invalid handler idstr \"\(idstr.prefix(64))\": it must be 1 to 255 bytes of UTF-8"
        }
    }
}

/// The handlers of one VM, keyed by (idstr, instance id): QEMU's savevm handler list.
///
/// Both engines take a snapshot of it when they start; registering during a migration
/// affects only the next one. Thread-safe.
public final class HandlerRegistry: Sendable {
    private struct State {
        var entries: [RegisteredHandler] = []
        // From 1: a QEMU destination finds a PART/END section's handler by the id its START bound,
        // and every handler it has not yet seen a START for holds id 0, so a PART of section 0
        // goes to the first one it registered (make test-qemu: "timer: incoming version_id 0").
        var nextSectionID: UInt32 = 1
    }

    private let state = Mutex(State())

    public init() {}

    /// Registers `handler` under `idstr`.
    ///
    /// - Parameters:
    ///   - handler: the handler; the registry keeps a strong reference to it.
    ///   - idstr: QEMU's section name ("ram", "0000:00:05.0/vfio"): 1 to 255 bytes of UTF-8.
    ///   - instanceID: nil picks one as QEMU's `VMSTATE_INSTANCE_ID_ANY`: 1 + the largest
    ///     instance registered with the same idstr, 0 for the first.
    ///   - versionID: the newest section version the handler writes and reads.
    ///   - priority: emission order, higher first.
    /// - Returns: the identity, with the instance id actually used.
    /// - Throws: ``RegistryError/duplicate(idstr:instanceID:)`` when taken.
    @discardableResult
    public func register(
        _ handler: any MigrationHandler, idstr: String, instanceID: UInt32? = nil,
        versionID: UInt32, priority: MigrationPriority = .default
    ) throws -> HandlerIdentity {
        let length = idstr.utf8.count
        guard length > 0, length <= 255 else { throw RegistryError.invalidIDString(idstr) }
        return try state.withLock { s in
            let sameName = s.entries.filter { $0.identity.idstr == idstr }
            let instance: UInt32
            if let instanceID {
                instance = instanceID
            } else if let maxInstance = sameName.map(\.identity.instanceID).max() {
                instance = maxInstance &+ 1
            } else {
                instance = 0
            }
            if sameName.contains(where: { $0.identity.instanceID == instance }) {
                throw RegistryError.duplicate(idstr: idstr, instanceID: instance)
            }
            let identity = HandlerIdentity(idstr: idstr, instanceID: instance, versionID: versionID)
            let entry = RegisteredHandler(identity: identity, handler: handler, priority: priority, sectionID: s.nextSectionID)
            s.nextSectionID &+= 1
            // Stable insertion: after every entry of the same or higher priority.
            let index = s.entries.firstIndex(where: { $0.priority < priority }) ?? s.entries.endIndex
            s.entries.insert(entry, at: index)
            return identity
        }
    }

    /// Removes a registration; false when there was none.
    @discardableResult
    public func unregister(idstr: String, instanceID: UInt32) -> Bool {
        state.withLock { s in
            guard let i = s.entries.firstIndex(where: { $0.identity.idstr == idstr && $0.identity.instanceID == instanceID }) else {
                return false
            }
            s.entries.remove(at: i)
            return true
        }
    }

    /// Every registration in emission order (priority, then registration order).
    public var entries: [RegisteredHandler] { state.withLock { $0.entries } }

    /// The handler registered as (idstr, instance id), if any.
    public func entry(idstr: String, instanceID: UInt32) -> RegisteredHandler? {
        state.withLock { s in s.entries.first { $0.identity.idstr == idstr && $0.identity.instanceID == instanceID } }
    }
}
