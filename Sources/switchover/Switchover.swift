import ArgumentParser

/// `switchover`: live migration of passthrough (VFIO) devices, wire-compatible with QEMU.
/// Each subcommand lives in its own file.
@main
struct Switchover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Migrate, receive, inspect or demonstrate live migration of VFIO devices.",
        subcommands: [Inspect.self]
    )
}
