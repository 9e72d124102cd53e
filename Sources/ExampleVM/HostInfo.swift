import Foundation

/// The machine a demo or benchmark ran on, as printed beside its figures.
public enum HostInfo {
    /// "2 vCPU, AMD EPYC" (the CPU model from /proc/cpuinfo; "unknown CPU" elsewhere).
    public static var summary: String {
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        return "\(cpus) vCPU, \(cpuModel)"
    }

    /// The first "model name" of /proc/cpuinfo.
    public static var cpuModel: String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return "unknown CPU"
    }
}
