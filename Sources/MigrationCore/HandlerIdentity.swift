import MigrationStream

/// Where a handler is registered: QEMU's (idstr, instance id, version id), the triple a START or
/// FULL section binds its section id to (MigrationStream's `SectionBinding`, one type for both; its `Key` and `key` are
/// defined here). `versionID` is
/// the newest section version the handler writes and reads; `idstr` is at most 255 bytes
/// (e.g. "ram", "0000:00:05.0/vfio").
public typealias HandlerIdentity = SectionBinding

extension HandlerIdentity {
    /// (idstr, instance id): how both ends match a handler, whatever section version each
    /// end runs (a destination loads older versions). It keys the return path's per-handler
    /// state and per-handler parameters such as ``MigrationParameters/multifdTransfer``.
    public struct Key: Sendable, Hashable, CustomStringConvertible {
        public var idstr: String
        public var instanceID: UInt32

        public init(_ idstr: String, instanceID: UInt32 = 0) { (self.idstr, self.instanceID) = (idstr, instanceID) }

        public init(_ identity: HandlerIdentity) { self.init(identity.idstr, instanceID: identity.instanceID) }

        public var description: String { "\"\(idstr)\" instance \(instanceID)" }
    }

    /// The version-free part of the identity that both ends match on.
    public var key: Key { Key(self) }
}
