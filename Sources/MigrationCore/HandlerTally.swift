/// What moved per handler on the main channel (index = the registry entries' index): bytes
/// and sections.
struct SectionTally {
    private(set) var bytes: [UInt64]
    private(set) var sections: [Int]

    init(count: Int) {
        bytes = Array(repeating: 0, count: count)
        sections = Array(repeating: 0, count: count)
    }

    /// One section of `n` bytes for handler `i`.
    mutating func add(_ i: Int, bytes n: UInt64) {
        bytes[i] = [bytes[i], n].saturatingSum
        sections[i] += 1
    }
}

/// The destination's load figures per handler: what moved, the time its loads took, the rate
/// basis of its final data, and when it was last reported to the source (LOAD_REPORT).
struct LoadTally {
    private(set) var moved: SectionTally
    private(set) var loadTime: [Duration]
    /// What was loaded once a handler's initial data was in: the final data's rate basis.
    private(set) var rateBytes: [UInt64]
    private(set) var rateTime: [Duration]
    private var lastReport: [Duration?]
    private var sectionsSinceReport: [Int]

    init(count: Int) {
        moved = SectionTally(count: count)
        loadTime = Array(repeating: .zero, count: count)
        rateBytes = Array(repeating: 0, count: count)
        rateTime = Array(repeating: .zero, count: count)
        lastReport = Array(repeating: nil, count: count)
        sectionsSinceReport = Array(repeating: 0, count: count)
    }

    /// Handler `i` loaded a section of `bytes` in `spent`; `pastInitialData`: it counts
    /// towards the final data's rate.
    mutating func loaded(_ i: Int, bytes: UInt64, spent: Duration, pastInitialData: Bool) {
        loadTime[i] += spent
        moved.add(i, bytes: bytes)
        if pastInitialData {
            rateTime[i] += spent
            rateBytes[i] = [rateBytes[i], bytes].saturatingSum
        }
    }

    /// Whether handler `i`'s figures are due for a report after this section: at most every
    /// 100 ms or 64 sections. Marks them reported when they are.
    mutating func reportDue(_ i: Int, now: Duration) -> Bool {
        sectionsSinceReport[i] += 1
        if let last = lastReport[i], now - last < MigrationParameters.rateLimitWindow, sectionsSinceReport[i] < 64 { return false }
        lastReport[i] = now
        sectionsSinceReport[i] = 0
        return true
    }
}

extension [RegisteredHandler] {
    /// Each entry's index by the key both ends match handlers on.
    var indexByKey: [HandlerIdentity.Key: Int] {
        var index: [HandlerIdentity.Key: Int] = [:]
        for (i, e) in enumerated() { index[e.identity.key] = i }
        return index
    }
}
