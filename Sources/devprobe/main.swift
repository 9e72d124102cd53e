import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

// ArgumentParser exits with 64 (EX_USAGE) for usage errors; devprobe documents 2.
do {
    var command = try DevProbe.parseAsRoot()
    try command.run()
} catch {
    if DevProbe.exitCode(for: error) == .validationFailure {
        Output.error(DevProbe.fullMessage(for: error))
        exit(2)
    }
    DevProbe.exit(withError: error)
}
