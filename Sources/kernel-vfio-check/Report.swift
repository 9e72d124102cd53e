// PASS/FAIL lines and the closing summary line that make test-kernel reads from the console.

#if os(Linux)
import Glibc

/// A failure that ends a check early.
struct CheckFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What one check found wrong; a check passes when it ends with no problem and nothing thrown.
struct Check {
    private(set) var problems: [String] = []

    mutating func expect(_ condition: Bool, _ detail: @autoclosure () -> String) {
        if !condition { problems.append(detail()) }
    }

    mutating func expectEqual<T: Equatable>(_ actual: T, _ expected: T, _ what: String) {
        expect(actual == expected, "\(what): got \(actual), want \(expected)")
    }

    /// `actual` is the errno a call failed with, nil when it succeeded.
    mutating func expectErrno(_ actual: Int32?, _ expected: Int32, _ what: String) {
        expect(actual == expected, "\(what): got \(actual.map(errnoName) ?? "success"), want \(errnoName(expected))")
    }

    mutating func expectSuccess(_ actual: Int32?, _ what: String) {
        expect(actual == nil, "\(what): failed with \(actual.map(errnoName) ?? "")")
    }

    mutating func expectErrno<T>(_ result: Result<T, SysError>, _ expected: Int32, _ what: String) {
        expectErrno(result.errnoValue, expected, what)
    }

    /// The value of a call that must succeed for the check to go on.
    func require<T>(_ result: Result<T, SysError>, _ what: String) throws(CheckFailure) -> T {
        switch result {
        case .success(let value): return value
        case .failure(let error): throw CheckFailure("\(what): \(error)")
        }
    }
}

extension Result where Failure == SysError {
    var errnoValue: Int32? {
        if case .failure(let error) = self { return error.code }
        return nil
    }
}

/// Runs checks, prints one line each, and counts them.
struct Report {
    private(set) var passed = 0
    private(set) var failed = 0

    mutating func run(_ name: String, _ body: (inout Check) throws -> Void) {
        var check = Check()
        var problems: [String]
        do {
            try body(&check)
            problems = check.problems
        } catch {
            problems = check.problems + ["\(error)"]
        }
        if problems.isEmpty {
            passed += 1
            print("PASS \(name)")
        } else {
            failed += 1
            print("FAIL \(name): \(problems.joined(separator: "; "))")
        }
        fflush(nil)
    }

    /// Lines that explain a result without being one.
    static func info(_ line: String) {
        print("  info: \(line)")
        fflush(nil)
    }

    var summary: String { summary(extraFailures: 0) }

    /// The closing line; `extraFailures` counts a failure printed outside `run` (an early exit).
    func summary(extraFailures: Int) -> String {
        "kernel-vfio: \(passed) passed, \(failed + extraFailures) failed"
    }
}
#endif
