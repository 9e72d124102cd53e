import ExampleVM
import Foundation
import MigrationCore
import MigrationTLS

/// Throw-away x509 credentials for the TLS benchmarks, made with Debian's `openssl` command in
/// a temporary directory (QEMU's layout: one CA, a server identity for 127.0.0.1, a client one).
public enum BenchmarkTLS {
    public enum Failure: Error, CustomStringConvertible {
        case openssl([String], Int32)
        public var description: String {
            switch self {
            case .openssl(let args, let status): "openssl \(args.joined(separator: " ")) exited with \(status) (make deps installs openssl)"
            }
        }
    }

    /// Makes the credentials; returns their directory.
    public static func makeCredentials() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("switchover-bench-tls-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func openssl(_ args: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = args
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw Failure.openssl(args, process.terminationStatus) }
        }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        try openssl(
            ["req", "-x509"] + ec + [
                "-keyout", dir + "/ca-key.pem", "-out", dir + "/ca-cert.pem", "-days", "2",
                "-subj", "/CN=Benchmark CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"
            ])
        for (role, ext) in [
            ("server", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"), ("client", "extendedKeyUsage=clientAuth\n")
        ] {
            try openssl(
                ["req", "-new"] + ec + ["-keyout", dir + "/\(role)-key.pem", "-out", dir + "/\(role).csr", "-subj", "/CN=bench-\(role)"])
            try ext.write(toFile: dir + "/\(role).ext", atomically: true, encoding: .utf8)
            try openssl([
                "x509", "-req", "-in", dir + "/\(role).csr", "-CA", dir + "/ca-cert.pem", "-CAkey", dir + "/ca-key.pem",
                "-CAcreateserial", "-days", "2", "-extfile", dir + "/\(role).ext", "-out", dir + "/\(role)-cert.pem"
            ])
        }
        return dir
    }

    /// TLS on both ends of a ``LoopbackMigration`` with the credentials in `directory`.
    public static func security(_ directory: String) -> LoopbackSecurity {
        let configuration = TLSConfiguration(directory: directory)
        let server = TLSTransport(base: TCPTransport(host: "127.0.0.1", port: 0), configuration: configuration)
        return LoopbackSecurity(
            listener: { try server.secure($0) },
            transport: { TLSTransport(base: $0, configuration: configuration) })
    }
}
