#if canImport(Glibc)
import Glibc
#endif

/// The time source of a migration engine: every timing decision (the 100 ms rate-limit
/// windows, bandwidth, the switchover and stall timeouts the engine checks itself) reads it,
/// so tests can run the engine on virtual time.
///
/// Instants are durations since an arbitrary origin. Blocking waits on other threads (the
/// transport's per-operation timeouts, waiting for a return-path answer) use real time.
public protocol MigrationClock: Sendable {
    /// The current instant; never goes backwards.
    var now: Duration { get }
    /// Blocks the calling thread until ``now`` has reached `deadline` (returns at once if it has).
    func sleep(until deadline: Duration)
}

/// The real monotonic clock (`CLOCK_MONOTONIC`), the default.
public struct MonotonicClock: MigrationClock {
    public init() {}

    public var now: Duration {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return .seconds(Int64(ts.tv_sec)) + .nanoseconds(Int64(ts.tv_nsec))
    }

    public func sleep(until deadline: Duration) {
        while true {
            let left = deadline - now
            if left <= .zero { return }
            let (s, atto) = left.components
            var ts = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
            _ = nanosleep(&ts, nil)
        }
    }
}

extension Duration {
    /// The duration in (fractional) milliseconds.
    var milliseconds: Double {
        let (s, atto) = components
        return Double(s) * 1000 + Double(atto) / 1e15
    }

    /// The duration in whole microseconds (0 when negative): what load reports carry.
    public var wholeMicroseconds: UInt64 {
        let (s, atto) = components
        guard s >= 0 else { return 0 }
        let (us, overflow) = s.multipliedReportingOverflow(by: 1_000_000)
        if overflow { return UInt64.max }
        return UInt64(us) + UInt64(atto / 1_000_000_000_000)
    }

    /// The longest duration a prediction can say: about 31 years. Figures from the peer (load
    /// rates, fixed costs) and from devices (pending bytes) can make a prediction arbitrarily
    /// large, infinite or NaN; it is clamped here instead of trapping on the conversion.
    static let predictionCeiling = Duration.seconds(1_000_000_000)

    /// `ms` milliseconds, clamped to 0...``predictionCeiling`` (NaN reads as the ceiling).
    static func fromMilliseconds(_ ms: Double) -> Duration {
        fromMicroseconds(ms * 1000)
    }

    /// `us` microseconds, clamped to 0...``predictionCeiling`` (NaN reads as the ceiling).
    static func fromMicroseconds(_ us: Double) -> Duration {
        let ceiling = 1e15  // µs in predictionCeiling
        guard us < ceiling else { return predictionCeiling }  // also +inf and NaN
        guard us > 0 else { return .zero }
        return .nanoseconds(Int64((us * 1000).rounded()))
    }

    /// `a + b`, at most ``predictionCeiling``; for predictions only (both are non-negative).
    static func predictionSum(_ a: Duration, _ b: Duration) -> Duration {
        let ceiling = predictionCeiling
        guard a < ceiling, b < ceiling else { return ceiling }
        return min(a + b, ceiling)
    }
}
