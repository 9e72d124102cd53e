#if os(Linux)
import Foundation
import Testing
import TestSupport

/// The host's side of make test-kernel (scripts/kernel-test/lib), run with bash on fake guest consoles, a
/// fake QEMU and a failing apt: the run passes only on a clean console, and a skip fails under CI.
@Suite("make test-kernel's host scripts: verdict, boot, skip")
struct HostScriptTests {
    static let lib = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appending(path: "scripts/kernel-test/lib").path

    /// Runs `script` with bash after sourcing `libraries` (from scripts/kernel-test/lib), with this
    /// process's environment minus CI, plus `environment`; stdout and stderr merged.
    static func bash(
        _ script: String, sourcing libraries: [String] = ["common", "verdict"], environment: [String: String] = [:]
    ) throws -> ChildProcess.Result {
        var env = ProcessInfo.processInfo.environment
        env["CI"] = nil
        env.merge(environment) { $1 }
        let prelude = libraries.map { ". \"\(lib)/\($0).sh\"" }.joined(separator: "\n")
        return try ChildProcess.run(
            "/bin/bash", ["-c", "set -euo pipefail\n" + prelude + "\n" + script],
            environment: env, errorOutput: .merged, limit: .seconds(60))
    }

    /// The verdict on `console` (written to a file).
    static func verdict(_ console: String) throws -> ChildProcess.Result {
        let directory = try TemporaryDirectory()
        let log = try directory.write("console.log", console)
        return try bash("kt_verdict \"\(log)\"")
    }

    // MARK: - The verdict

    @Test("A clean console passes and prints its summary")
    func cleanConsole() throws {
        let result = try Self.verdict(FakeConsole().text)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "kernel-vfio: 42 passed, 0 failed\nkernel-vfio: PASSED\n")
    }

    /// The console of a real run (make test-kernel, Debian 6.12.117, 42 checks), as the host logged it.
    static func realConsole() throws -> String {
        let path = URL(filePath: #filePath).deletingLastPathComponent().appending(path: "Fixtures/console-debian-6.12.117.log").path
        return try String(contentsOfFile: path, encoding: .utf8)
    }

    @Test("A real guest's console passes; without one of its PASS lines, or with its binary's exit 1, it fails")
    func realConsole() throws {
        let console = try Self.realConsole()
        let result = try Self.verdict(console)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "kernel-vfio: 42 passed, 0 failed\nkernel-vfio: PASSED\n")

        let dropped = try Self.verdict(console.replacingOccurrences(of: "PASS migration-destination\n", with: ""))
        #expect(dropped.status == 1)
        #expect(dropped.stdout.contains("but the console has 41 PASS and 0 FAIL lines"), "\(dropped)")

        let exit1 = try Self.verdict(
            console.replacingOccurrences(of: "guest: kernel-vfio-check exit 0", with: "guest: kernel-vfio-check exit 1"))
        #expect(exit1.status == 1)
        #expect(exit1.stdout.contains("FAILED: kernel-vfio-check exited with status 1"), "\(exit1)")
    }

    @Test("Carriage returns from the serial line do not matter")
    func carriageReturns() throws {
        let result = try Self.verdict(FakeConsole().text.replacingOccurrences(of: "\n", with: "\r\n"))
        #expect(result.status == 0, "\(result)")
    }

    @Test("A console without the summary line fails")
    func missingSummary() throws {
        var console = FakeConsole()
        console.summary = nil
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("kernel-vfio: FAILED: the guest printed no summary line"), "\(result)")
    }

    @Test("A PASS line missing from the console fails, though the summary counts no failure")
    func missingPassLine() throws {
        var console = FakeConsole()
        console.checks.removeLast()
        console.summary = "kernel-vfio: 42 passed, 0 failed"
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(
            result.stdout.contains(
                "FAILED: the summary says 42 passed, 0 failed, but the console has 41 PASS and 0 FAIL lines"), "\(result)")
    }

    @Test("A PASS line printed twice (a child's line counted once) fails")
    func extraPassLine() throws {
        var console = FakeConsole()
        console.checks.append("PASS migration-source")
        console.summary = "kernel-vfio: 42 passed, 0 failed"
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("but the console has 43 PASS and 0 FAIL lines"), "\(result)")
    }

    @Test("A failed check fails the run and is named")
    func failedCheck() throws {
        var console = FakeConsole()
        console.checks[3] = "FAIL feature-probe: PROBE|SET of MIGRATION: got success, want EINVAL"
        console.summary = "kernel-vfio: 41 passed, 1 failed"
        console.exitStatus = 1
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("kernel-vfio: 41 passed, 1 failed\n"), "\(result)")
        #expect(result.stdout.contains("1 check(s) failed: feature-probe; kernel-vfio-check exited with status 1"), "\(result)")
    }

    @Test("The check binary's non-zero exit fails the run even when every check passed")
    func nonZeroExit() throws {
        var console = FakeConsole()
        console.exitStatus = 1
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAILED: kernel-vfio-check exited with status 1"), "\(result)")
    }

    @Test("A check binary killed by a signal fails the run, naming the signal")
    func killedBinary() throws {
        var console = FakeConsole()
        console.exitStatus = 139
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("kernel-vfio-check exited with status 139 (killed by signal 11)"), "\(result)")
    }

    @Test("A console without the binary's exit status fails")
    func missingExitStatus() throws {
        var console = FakeConsole()
        console.exitStatus = nil
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAILED: the guest did not report kernel-vfio-check's exit status"), "\(result)")
    }

    @Test("Two summary lines fail")
    func twoSummaries() throws {
        var console = FakeConsole()
        console.checks.append("kernel-vfio: 1 passed, 0 failed")
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAILED: 2 summary lines, want one"), "\(result)")
    }

    @Test("A run of no checks fails")
    func noChecks() throws {
        var console = FakeConsole()
        console.checks = []
        console.summary = "kernel-vfio: 0 passed, 0 failed"
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAILED: no check ran"), "\(result)")
    }

    @Test("The guest's setup failure fails the run")
    func setupFailure() throws {
        var console = FakeConsole()
        console.checks = ["FAIL guest-setup: insmod mtty", "  dmesg: mtty: Unknown symbol mdev_register_parent"]
        console.summary = "kernel-vfio: 0 passed, 1 failed"
        console.exitStatus = nil
        let result = try Self.verdict(console.text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("1 check(s) failed: guest-setup"), "\(result)")
    }

    @Test("A missing console log fails")
    func missingLog() throws {
        let result = try Self.bash("kt_verdict /nonexistent/console.log")
        #expect(result.status == 1)
        #expect(result.stdout == "kernel-vfio: FAILED: no console log /nonexistent/console.log\n")
    }

    // MARK: - The boot, with a fake QEMU

    /// A script that first puts a fake `command` made of `body` (a sh script) first on PATH, in
    /// `directory`/bin. Made by bash, not by this process: an executable written here could still be open
    /// for writing in a child another test forks meanwhile, and exec would fail with ETXTBSY.
    static func fake(_ command: String, body: String, in directory: TemporaryDirectory) -> String {
        """
        mkdir -p '\(directory.path)/bin'
        cat > '\(directory.path)/bin/\(command)' <<'FAKE'
        #!/bin/sh
        \(body)
        FAKE
        chmod +x '\(directory.path)/bin/\(command)'
        PATH='\(directory.path)/bin':$PATH

        """
    }

    /// Runs kt_boot then kt_verdict with a fake qemu-system-x86_64 made of `qemu`.
    static func boot(qemu: String, console: String, timeout: Int = 60) throws -> ChildProcess.Result {
        let directory = try TemporaryDirectory()
        let consoleFile = try directory.write("fake-console", console)
        return try bash(
            fake("qemu-system-x86_64", body: qemu, in: directory) + """
                KT_VMLINUZ=vmlinuz KT_INITRD=initrd KT_KREL=fake
                kt_boot
                kt_verdict "$KT_CONSOLE_LOG"
                """,
            sourcing: ["common", "boot", "verdict"],
            environment: ["KERNEL_TEST_CACHE": directory.path, "KERNEL_TEST_TIMEOUT": "\(timeout)", "FAKE_CONSOLE": consoleFile])
    }

    @Test("A guest that powers off after a clean run passes")
    func bootClean() throws {
        let result = try Self.boot(qemu: "cat \"$FAKE_CONSOLE\"", console: FakeConsole().text)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.hasSuffix("kernel-vfio: 42 passed, 0 failed\nkernel-vfio: PASSED\n"), "\(result)")
    }

    @Test("A guest that never powers off is stopped at the deadline and fails the run")
    func bootHangs() throws {
        // The whole console, then no power-off.
        let result = try Self.boot(qemu: "cat \"$FAKE_CONSOLE\"; exec sleep 1000", console: FakeConsole().text, timeout: 1)
        #expect(result.status == 1)
        #expect(result.stdout.contains("kernel-test: error: the guest did not power off within 1 s"), "\(result)")
        #expect(!result.stdout.contains("PASSED"))
    }

    @Test("QEMU ended by a signal fails the run, though the console looks clean")
    func bootKilled() throws {
        let result = try Self.boot(qemu: "cat \"$FAKE_CONSOLE\"; kill -KILL $$", console: FakeConsole().text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("kernel-test: error: qemu-system-x86_64 was ended by signal 9 (status 137"), "\(result)")
    }

    @Test("QEMU exiting non-zero fails the run")
    func bootExitStatus() throws {
        let result = try Self.boot(qemu: "cat \"$FAKE_CONSOLE\"; exit 1", console: FakeConsole().text)
        #expect(result.status == 1)
        #expect(result.stdout.contains("kernel-test: error: qemu-system-x86_64 exited with status 1"), "\(result)")
    }

    // MARK: - Skips

    @Test("Outside CI a skip prints the reason and the fix, and exits 0")
    func skipOutsideCI() throws {
        let result = try Self.bash("kt_skip 'no registry' 'apt-get update'; echo not reached")
        #expect(result.status == 0)
        #expect(result.stdout == "kernel-vfio: SKIPPED: no registry\nkernel-vfio: to fix: apt-get update\n")
    }

    @Test("With CI=true a skip is a failure with the reason")
    func skipInCI() throws {
        let result = try Self.bash("kt_skip 'no registry' 'apt-get update'; echo not reached", environment: ["CI": "true"])
        #expect(result.status == 1)
        #expect(
            result.stdout == """
                kernel-vfio: FAILED: no registry (CI=true: what would be a skip elsewhere fails here)
                kernel-vfio: to fix: apt-get update

                """)
    }

    /// kt_download with a fake apt-get that fails as apt does when its mirror does not answer.
    static func failingDownload(ci: Bool) throws -> ChildProcess.Result {
        let directory = try TemporaryDirectory()
        let apt = """
            echo "Err:1 http://deb.debian.org/debian-security bookworm-security/main amd64 linux-source-6.12 all 6.12.117-1~deb12u1"
            echo "  Could not connect to deb.debian.org:80 (151.101.2.132), connection timed out"
            echo "E: Failed to fetch http://deb.debian.org/debian-security/pool/updates/main/l/linux/linux-source-6.12_6.12.117-1~deb12u1_all.deb"
            exit 100
            """
        var environment = ["KERNEL_TEST_CACHE": directory.path]
        if ci { environment["CI"] = "true" }
        return try bash(
            fake("apt-get", body: apt, in: directory) + """
                KT_VERSION=6.12.117-1~deb12u1 KT_IMAGE_PKG=linux-image-6.12.117+deb12-amd64-unsigned KT_ABI=6.12.117+deb12
                KT_BUSYBOX_VERSION=1:1.35.0-4+deb12u1+b1
                kt_download
                echo "downloaded"
                """,
            sourcing: ["common", "fetch"], environment: environment)
    }

    @Test("With CI=true a failed download fails the run with apt's error")
    func failedDownloadInCI() throws {
        let result = try Self.failingDownload(ci: true)
        #expect(result.status == 1)
        #expect(
            result.stdout.contains(
                "kernel-vfio: FAILED: apt-get download failed: Err:1 http://deb.debian.org/debian-security bookworm-security/main amd64 "
                    + "linux-source-6.12 all 6.12.117-1~deb12u1: Could not connect to deb.debian.org:80 (151.101.2.132), connection timed out"
            ),
            "\(result)")
        #expect(result.stdout.contains("kernel-vfio: to fix: check that apt's mirror answers"), "\(result)")
        #expect(!result.stdout.contains("downloaded"))
    }

    // MARK: - make test-qemu (KT_NAME=qemu-peer)

    /// A console of the QEMU peer guest: its steps, summary and exit line.
    static func qemuPeerConsole(steps: [String], summary: String, exit: Int) -> String {
        (["guest: QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)", "  info: a line"] + steps
            + [summary, "guest: qemu-peer-guest exit \(exit)", "[   99.000000] reboot: Power down"]).joined(separator: "\n") + "\n"
    }

    @Test("make test-qemu's verdict reads its own summary and exit lines, and not kernel-vfio's")
    func qemuPeerVerdict() throws {
        let directory = try TemporaryDirectory()
        let environment = ["KT_NAME": "qemu-peer", "KT_GUEST_PROGRAM": "qemu-peer-guest"]
        let steps = [
            "PASS qemu-saves-vm-to-file", "PASS switchover-inspects-qemu-file", "PASS qemu-file-loaded-by-switchover",
            "PASS switchover-source-to-qemu-live", "PASS qemu-destination-completed", "PASS qemu-saves-what-switchover-sent"
        ]
        let clean = try directory.write("clean.log", Self.qemuPeerConsole(steps: steps, summary: "qemu-peer: 6 passed, 0 failed", exit: 0))
        let passed = try Self.bash("kt_verdict \"\(clean)\"", environment: environment)
        #expect(passed.status == 0, "\(passed)")
        #expect(passed.stdout == "qemu-peer: 6 passed, 0 failed\nqemu-peer: PASSED\n")

        var failing = steps
        failing[3] = "FAIL switchover-source-to-qemu-live: QEMU sent no SWITCHOVER_ACK"
        let failed = try directory.write(
            "failed.log", Self.qemuPeerConsole(steps: failing, summary: "qemu-peer: 5 passed, 1 failed", exit: 1))
        let result = try Self.bash("kt_verdict \"\(failed)\"", environment: environment)
        #expect(result.status == 1)
        #expect(result.stdout.contains("qemu-peer: FAILED: 1 check(s) failed: switchover-source-to-qemu-live"), "\(result)")
        #expect(result.stdout.contains("qemu-peer-guest exited with status 1"), "\(result)")

        // A kernel-vfio console is no qemu-peer verdict.
        let other = try directory.write("other.log", FakeConsole().text)
        let wrong = try Self.bash("kt_verdict \"\(other)\"", environment: environment)
        #expect(wrong.status == 1)
        #expect(wrong.stdout.contains("the guest printed no summary line `qemu-peer: N passed, M failed`"), "\(wrong)")
    }

    @Test("make test-qemu's skip fails under CI with its own name")
    func qemuPeerSkipInCI() throws {
        let result = try Self.bash(
            "kt_skip 'apt knows no qemu-system-x86 in bookworm-backports' 'apt-get update'; echo not reached",
            environment: ["CI": "true", "KT_NAME": "qemu-peer"])
        #expect(result.status == 1)
        #expect(result.stdout.hasPrefix("qemu-peer: FAILED: apt knows no qemu-system-x86 in bookworm-backports (CI=true"), "\(result)")
    }

    @Test("Outside CI a failed download is a skip with apt's error")
    func failedDownloadOutsideCI() throws {
        let result = try Self.failingDownload(ci: false)
        #expect(result.status == 0)
        #expect(result.stdout.contains("kernel-vfio: SKIPPED: apt-get download failed: Err:1"), "\(result)")
        #expect(!result.stdout.contains("downloaded"))
    }
}

/// A guest console as the kernel-test guest prints it: kernel noise, the guest's setup lines, the checks'
/// PASS/FAIL and info lines, the summary, the check binary's exit status, the power-off.
struct FakeConsole {
    var checks: [String] = (1...42).map { "PASS check-\($0)" }
    var summary: String? = "kernel-vfio: 42 passed, 0 failed"
    var exitStatus: Int? = 0

    var text: String {
        var lines = [
            "[    0.000000] Linux version 6.12.117+deb12-amd64 (debian-kernel@lists.debian.org)",
            "guest: kernel 6.12.117+deb12-amd64, 2 cpus",
            "guest: mtty-2 available_instances 12",
            "guest: source 6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0001 group 0, destination 6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0002 group 1"
        ]
        for (index, check) in checks.enumerated() {
            lines.append("  info: note \(index)")
            lines.append(check)
        }
        if let summary { lines.append(summary) }
        if let exitStatus { lines.append("guest: kernel-vfio-check exit \(exitStatus)") }
        lines.append("[   12.345678] reboot: Power down")
        return lines.joined(separator: "\n") + "\n"
    }
}
#endif
