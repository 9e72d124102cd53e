import Synchronization
import VFIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Time as the simulator sees it: when dirty bytes accrue and how long a destination load takes.
/// Inject `ManualSimulationClock` in tests so nothing depends on wall time.
public protocol VFIOSimulationClock: Sendable {
    /// Monotonic time since an arbitrary origin.
    func now() -> Duration
    /// Spends `duration` (a destination load, a hung request).
    func sleep(for duration: Duration)
}

/// Wall-clock time (`ContinuousClock`) and real sleeping (`nanosleep(2)`).
public struct SystemSimulationClock: VFIOSimulationClock {
    private let origin = ContinuousClock.now

    public init() {}

    public func now() -> Duration { ContinuousClock.now - origin }

    public func sleep(for duration: Duration) {
        guard duration > .zero else { return }
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
    }
}

/// A clock that moves only when told: `advance(by:)` moves it, and `sleep(for:)` moves it by the
/// requested duration and returns at once, adding it to `totalSlept`.
public final class ManualSimulationClock: VFIOSimulationClock {
    private struct State {
        var now: Duration = .zero
        var slept: Duration = .zero
        var sleeps: [Duration] = []
    }

    private let state = Mutex(State())

    public init() {}

    public func now() -> Duration { state.withLock { $0.now } }

    public func sleep(for duration: Duration) {
        state.withLock {
            $0.now += duration
            $0.slept += duration
            $0.sleeps.append(duration)
        }
    }

    /// Moves time forward.
    public func advance(by duration: Duration) {
        state.withLock { $0.now += duration }
    }

    /// The sum of every `sleep(for:)` so far.
    public var totalSlept: Duration { state.withLock { $0.slept } }

    /// Every `sleep(for:)` so far, in order.
    public var sleeps: [Duration] { state.withLock { $0.sleeps } }
}
