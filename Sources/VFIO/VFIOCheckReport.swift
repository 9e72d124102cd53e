// The bookkeeping of `VFIOBehaviourChecks`: one result per named check, the problems it found, and the
// summary line `make test-kernel` looks for. Shared by kernel-vfio-check (prints PASS/FAIL lines) and
// VFIOTests (expects every check to pass against the simulator).

import SystemPackage

/// A failure that ends a check early.
package struct VFIOCheckAbort: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// What one check found wrong; it passes when it ends with no problem and nothing thrown.
package struct VFIOCheck {
    package private(set) var problems: [String] = []
    /// Lines that explain a result without being one (printed as `  info: …`).
    package private(set) var notes: [String] = []

    package init() {}

    package mutating func expect(_ condition: Bool, _ detail: @autoclosure () -> String) {
        if !condition { problems.append(detail()) }
    }

    package mutating func expectEqual<T: Equatable>(_ actual: T, _ expected: T, _ what: String) {
        expect(actual == expected, "\(what): got \(actual), want \(expected)")
    }

    /// `actual` is the errno a call failed with, nil when it succeeded.
    package mutating func expectErrno(_ actual: Errno?, _ expected: Errno, _ what: String) {
        expect(actual == expected, "\(what): got \(Self.name(actual)), want \(Self.name(expected))")
    }

    package mutating func expectErrno<T>(_ result: Result<T, Errno>, _ expected: Errno, _ what: String) {
        expectErrno(result.failureErrno, expected, what)
    }

    package mutating func expectSuccess(_ actual: Errno?, _ what: String) {
        expect(actual == nil, "\(what): failed with \(Self.name(actual))")
    }

    package mutating func expectSuccess<T>(_ result: Result<T, Errno>, _ what: String) {
        expectSuccess(result.failureErrno, what)
    }

    /// The typed API's error for `body`, or nil when it succeeded.
    package mutating func expectError<T>(_ what: String, _ body: () throws(VFIOError) -> T) -> VFIOError? {
        do {
            _ = try body()
            problems.append("\(what): succeeded, want an error")
            return nil
        } catch {
            return error
        }
    }

    /// The value of a raw call that must succeed for the check to go on.
    package func require<T>(_ result: Result<T, Errno>, _ what: String) throws(VFIOCheckAbort) -> T {
        switch result {
        case .success(let value): return value
        case .failure(let errno): throw VFIOCheckAbort("\(what): \(Self.name(errno))")
        }
    }

    package mutating func note(_ line: String) { notes.append(line) }

    /// The errno's symbolic name and number, or "success".
    package static func name(_ errno: Errno?) -> String {
        guard let errno else { return "success" }
        switch errno {
        case .notPermitted: return "EPERM"
        case .noSuchFileOrDirectory: return "ENOENT"
        case .ioError: return "EIO"
        case .badFileDescriptor: return "EBADF"
        case .resourceTemporarilyUnavailable: return "EAGAIN"
        case .noMemory: return "ENOMEM"
        case .badAddress: return "EFAULT"
        case .resourceBusy: return "EBUSY"
        case .operationNotSupportedByDevice: return "ENODEV"
        case .invalidArgument: return "EINVAL"
        case .inappropriateIOCTLForDevice: return "ENOTTY"
        case .illegalSeek: return "ESPIPE"
        case .noMessage: return "ENOMSG"
        case .timedOut: return "ETIMEDOUT"
        case .interrupted: return "EINTR"
        default: return "errno \(errno.rawValue)"
        }
    }
}

extension Result where Failure == Errno {
    /// The errno of a failed call, nil on success.
    package var failureErrno: Errno? {
        if case .failure(let errno) = self { return errno }
        return nil
    }
}

/// The outcome of one named check.
package struct VFIOCheckResult: Sendable, Equatable {
    package var name: String
    package var problems: [String]
    package var passed: Bool { problems.isEmpty }

    package init(name: String, problems: [String]) { (self.name, self.problems) = (name, problems) }

    /// `PASS name` or `FAIL name: problem; problem`.
    package var line: String {
        passed ? "PASS \(name)" : "FAIL \(name): \(problems.joined(separator: "; "))"
    }
}

/// Runs checks one after another and keeps their results.
package struct VFIOCheckReport {
    package private(set) var results: [VFIOCheckResult] = []
    /// Called with every PASS/FAIL line and every note as it happens (kernel-vfio-check prints them).
    package var output: (String) -> Void

    package init(output: @escaping (String) -> Void = { _ in }) {
        self.output = output
    }

    package var passed: Int { results.filter(\.passed).count }
    package var failed: Int { results.count - passed }

    /// Runs `body` as the check `name`.
    package mutating func run(_ name: String, _ body: (inout VFIOCheck) throws -> Void) {
        var check = VFIOCheck()
        var problems: [String]
        do {
            try body(&check)
            problems = check.problems
        } catch {
            problems = check.problems + ["\(error)"]
        }
        for note in check.notes { output("  info: \(note)") }
        record(VFIOCheckResult(name: name, problems: problems))
    }

    /// Adds a result found outside `run` (e.g. by another process).
    package mutating func record(_ result: VFIOCheckResult) {
        results.append(result)
        output(result.line)
    }

    /// The closing line: `<prefix>: N passed, M failed`.
    package func summary(prefix: String = "kernel-vfio") -> String {
        "\(prefix): \(passed) passed, \(failed) failed"
    }
}
