import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// `switchover`: live migration of passthrough (VFIO) devices, wire-compatible with QEMU.
/// Each subcommand lives in its own file.
@main
struct Switchover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Migrate, receive, inspect or demonstrate live migration of VFIO devices.",
        discussion: """
            Exit status: 0 on success, 1 when the migration (or the stream) fails, 2 for bad usage.
            """,
        subcommands: [Migrate.self, Incoming.self, Demo.self, Inspect.self]
    )

    /// ArgumentParser exits with 64 (EX_USAGE) for usage errors; switchover, like devprobe,
    /// documents 2.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                var standardError = StandardError()
                print(fullMessage(for: error), to: &standardError)
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }
}
