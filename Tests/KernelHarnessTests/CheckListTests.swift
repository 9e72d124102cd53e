#if os(Linux)
import Foundation
import Testing
@testable import VFIO
import VFIOSimulator
@testable import kernel_vfio_check

/// Every check the guest can print says in docs/kernel-test.md what a PASS proves: one table row per
/// check, and no row for a check that no longer exists.
@Suite("The check list and its documentation")
struct CheckListTests {
    static let docsPath = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appending(path: "docs/kernel-test.md").path

    /// The first cells of the table rows under "## The checks", up to the next "## " heading.
    static func documentedChecks() throws -> [String] {
        let text = try String(contentsOfFile: docsPath, encoding: .utf8)
        var inChecks = false
        var names: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") { inChecks = line == "## The checks" }
            guard inChecks, line.hasPrefix("| ") else { continue }
            let cell = line.dropFirst(2).prefix { $0 != "|" }.trimmingCharacters(in: .whitespaces)
            if cell == "check" || cell.allSatisfy({ $0 == "-" }) { continue }
            names.append(cell)
        }
        return names
    }

    /// Every name a PASS/FAIL line of a full run carries, as the docs write it (the seven state-pair
    /// checks share one row).
    static func checkNames() throws -> [String] {
        let clock = ManualSimulationClock()
        let source = try SimulatedVFIODevice(.mtty(name: "a", ports: 2, seed: 1), clock: clock)
        let destination = try SimulatedVFIODevice(.mtty(name: "b", ports: 2, seed: 2), clock: clock)
        let behaviour = try VFIOBehaviourChecks(source: source, destination: destination).checkNames
        var names: [String] = []
        for name in KernelCheck.allCases.map(\.name) + behaviour {
            let documented = name.hasPrefix("state-pairs-from-") ? "state-pairs-from-&lt;STATE&gt; (7)" : name
            if !names.contains(documented) { names.append(documented) }
        }
        return names
    }

    @Test("docs/kernel-test.md has one row for every check and none for a check that does not exist")
    func everyCheckDocumented() throws {
        let documented = try Self.documentedChecks()
        let names = try Self.checkNames()
        #expect(names.contains("migration-config-state-restored") && names.contains("reset-disables-save-fd"))
        for name in names where documented.filter({ $0 == name }).count != 1 {
            Issue.record("docs/kernel-test.md has \(documented.filter { $0 == name }.count) rows for the check \(name), want 1")
        }
        for row in documented where !names.contains(row) {
            Issue.record("docs/kernel-test.md documents \(row), which kernel-vfio-check does not run")
        }
    }
}
#endif
