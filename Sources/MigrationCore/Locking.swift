#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable on the monotonic clock: state shared between a
/// migration thread and its return-path thread, with timed waits.
///
/// Kept beside `Synchronization.Mutex` because waiting needs a condition variable, which
/// Mutex lacks: the multifd sessions wait for queue space and for channels, the return paths
/// for a message, with deadlines. State that nobody waits for uses a `Mutex`.
final class Monitor<State>: @unchecked Sendable {
    // @unchecked: `state` is touched only between pthread_mutex_lock and unlock.
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var state: State

    init(_ state: State) {
        self.state = state
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        #if canImport(Glibc)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    /// Runs `body` with the state locked.
    func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&state)
    }

    /// Changes the state and wakes every waiter.
    func update<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&cond)
            pthread_mutex_unlock(&mutex)
        }
        return try body(&state)
    }

    /// Waits until `body` returns non-nil or `timeout` (real time) passes; nil on timeout.
    /// `timeout` nil waits forever.
    func wait<R>(timeout: Duration?, _ body: (inout State) throws -> R?) rethrows -> R? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let deadline = timeout.map { MonotonicClock().now + $0 }
        while true {
            if let r = try body(&state) { return r }
            if let deadline {
                let left = deadline - MonotonicClock().now
                if left <= .zero { return nil }
                var ts = timespec()
                clock_gettime(CLOCK_MONOTONIC, &ts)
                let (s, atto) = left.components
                var sec = Int(ts.tv_sec) + Int(s)
                var nsec = Int(ts.tv_nsec) + Int(atto / 1_000_000_000)
                if nsec >= 1_000_000_000 {
                    sec += 1
                    nsec -= 1_000_000_000
                }
                var abs = timespec(tv_sec: sec, tv_nsec: nsec)
                _ = pthread_cond_timedwait(&cond, &mutex, &abs)
            } else {
                _ = pthread_cond_wait(&cond, &mutex)
            }
        }
    }
}
