import MigrationStream

/// A handler that sends and expects nothing: every hook keeps its default.
///
/// For a device whose state needs no migration but must still be accounted for (so both
/// ends register the same set of handlers), and as the smallest possible example of the
/// protocol. It takes part in the pre-flight check like any other handler.
public final class NoOpMigrationHandler: MigrationHandler {
    public init() {}
    public var isLive: Bool { false }
    public var hasFullState: Bool { false }

    /// A no-op source sends no section, so any section for it is refused.
    public func loadState(from reader: StreamReader, header: SectionHeader, context: LoadContext) throws {
        throw MigrationHandlerError.unsupported(identity: context.identity, hook: "loadState (a no-op handler expects no sections)")
    }
}
