// The same, with the counter guarded by NSLock (pthread_mutex).
import Foundation

final class Counter: @unchecked Sendable {
    let lock = NSLock()
    var value = 0
}

let counter = Counter()
let rounds = 100_000
let threads = (0..<2).map { _ in
    Thread { for _ in 0..<rounds { counter.lock.withLock { counter.value += 1 } } }
}
threads.forEach { $0.start() }
while counter.lock.withLock({ counter.value }) < 2 * rounds { usleep(1000) }
print("count \(counter.lock.withLock { counter.value })")
