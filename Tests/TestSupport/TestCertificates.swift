import Foundation
import MigrationCore

#if canImport(Glibc)
import Glibc
#endif

/// Debian's `openssl` command, or nil when it is not installed.
public let opensslPath: String? = ["/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"].first { access($0, X_OK) == 0 }

/// Whether the tests that need the `openssl` command run: always under CI=true (a missing
/// command must fail there, `make deps` installs it), else only when it is installed.
public let opensslAvailable = opensslPath != nil || ProcessInfo.processInfo.environment["CI"] == "true"

public enum CertificateError: Error, CustomStringConvertible {
    case openssl([String], ChildProcess.Result)
    case missing

    public var description: String {
        switch self {
        case .openssl(let args, let result): "openssl \(args.joined(separator: " ")) failed: \(result)"
        case .missing: "the openssl command is not installed (make deps installs it)"
        }
    }
}

/// A throw-away CA made with the `openssl` command in a temporary directory, which issues
/// certificates (valid, expired, not yet valid, for other names), revokes them, and lays
/// them out in QEMU's credential directories. Nothing here is committed: every key is made
/// at test time.
public final class TestPKI: @unchecked Sendable {
    // @unchecked: the tests use one instance from one task at a time.
    public let root: String
    public let name: String
    private var serial = 0

    /// A new CA called `name` (its certificate's CN).
    public init(name: String = "Switchover Test CA") throws {
        guard opensslPath != nil else { throw CertificateError.missing }
        var template = Array((NSTemporaryDirectory() + "/switchover-tls-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw CertificateError.missing }
        root = String(cString: made)
        self.name = name
        try FileManager.default.createDirectory(atPath: root + "/newcerts", withIntermediateDirectories: true)
        try "".write(toFile: root + "/index.txt", atomically: true, encoding: .utf8)
        try "1000\n".write(toFile: root + "/serial", atomically: true, encoding: .utf8)
        try "1000\n".write(toFile: root + "/crlnumber", atomically: true, encoding: .utf8)
        try """
        [ ca ]
        default_ca = local
        [ local ]
        dir = \(root)
        database = $dir/index.txt
        new_certs_dir = $dir/newcerts
        certificate = $dir/ca-cert.pem
        private_key = $dir/ca-key.pem
        serial = $dir/serial
        crlnumber = $dir/crlnumber
        default_md = sha256
        default_days = 30
        default_crl_days = 30
        policy = anything
        unique_subject = no
        email_in_dn = no
        [ anything ]
        organizationName = optional
        commonName = supplied
        """.write(toFile: root + "/ca.cnf", atomically: true, encoding: .utf8)
        try key(root + "/ca-key.pem")
        try openssl([
            "req", "-x509", "-new", "-key", root + "/ca-key.pem", "-subj", "/O=Switchover Tests/CN=\(name)", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", root + "/ca-cert.pem"
        ])
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    public var caCertificate: String { root + "/ca-cert.pem" }

    /// Issues a certificate; returns (certificate path, key path).
    /// - Parameters:
    ///   - server: a server certificate (serverAuth, with `names` as subjectAltNames), else a client one.
    ///   - validity: `openssl ca -startdate/-enddate` values (YYYYMMDDHHMMSSZ); nil = now for 30 days.
    @discardableResult
    public func issue(
        _ commonName: String, server: Bool, names: [String] = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"],
        validity: (start: String, end: String)? = nil
    ) throws -> (certificate: String, key: String) {
        serial += 1
        let base = root + "/\(server ? "server" : "client")-\(serial)"
        try key(base + "-key.pem")
        try openssl(["req", "-new", "-key", base + "-key.pem", "-subj", "/O=Switchover Tests/CN=\(commonName)", "-out", base + ".csr"])
        let extensions =
            server
            ? "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=\(names.joined(separator: ","))\n"
            : "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
        try "[ e ]\n\(extensions)".write(toFile: base + ".ext", atomically: true, encoding: .utf8)
        var args = [
            "ca", "-batch", "-config", root + "/ca.cnf", "-notext", "-in", base + ".csr", "-out", base + "-cert.pem",
            "-extfile", base + ".ext", "-extensions", "e"
        ]
        if let validity { args += ["-startdate", validity.start, "-enddate", validity.end] }
        try openssl(args)
        return (base + "-cert.pem", base + "-key.pem")
    }

    /// Revokes `certificate` and writes the CA's CRL to `crl`.
    public func revoke(_ certificate: String, crl: String) throws {
        try openssl(["ca", "-config", root + "/ca.cnf", "-revoke", certificate])
        try openssl(["ca", "-config", root + "/ca.cnf", "-gencrl", "-out", crl])
    }

    /// A QEMU-layout credentials directory trusting `trust` (default: this CA), holding the given
    /// server and/or client identity and optionally a CRL.
    public func directory(
        _ label: String, trust: TestPKI? = nil, server: (certificate: String, key: String)? = nil,
        client: (certificate: String, key: String)? = nil, crl: String? = nil
    ) throws -> String {
        let dir = root + "/creds-\(label)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try copy((trust ?? self).caCertificate, dir + "/ca-cert.pem")
        if let server {
            try copy(server.certificate, dir + "/server-cert.pem")
            try copy(server.key, dir + "/server-key.pem")
        }
        if let client {
            try copy(client.certificate, dir + "/client-cert.pem")
            try copy(client.key, dir + "/client-key.pem")
        }
        if let crl { try copy(crl, dir + "/ca-crl.pem") }
        return dir
    }

    private func copy(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    private func key(_ path: String) throws {
        try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path])
    }

    private func openssl(_ args: [String]) throws {
        guard let opensslPath else { throw CertificateError.missing }
        let result = try ChildProcess.run(opensslPath, args, limit: .seconds(60))
        guard result.status == 0 else { throw CertificateError.openssl(args, result) }
    }
}

/// A CA with a server and a client identity, and both ends' credential directories.
public struct TestCredentials: Sendable {
    public let pki: TestPKI
    public let server: (certificate: String, key: String)
    public let client: (certificate: String, key: String)
    /// The destination's directory (ca-cert.pem, server-cert.pem, server-key.pem).
    public let destination: String
    /// The source's directory (ca-cert.pem, client-cert.pem, client-key.pem).
    public let source: String
    /// The client certificate's subject as the destination sees it (RFC 2253).
    public let clientSubject = "CN=switchover-source,O=Switchover Tests"

    public init() throws {
        pki = try TestPKI()
        server = try pki.issue("switchover-destination", server: true)
        client = try pki.issue("switchover-source", server: false)
        destination = try pki.directory("destination", server: server)
        source = try pki.directory("source", client: client)
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now (for a child process to listen on).
public func freeLoopbackPort() throws -> UInt16 {
    let probe = try TCPListener(host: "127.0.0.1", port: 0)
    defer { probe.close() }
    return probe.port
}
