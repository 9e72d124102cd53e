// Two threads increment a counter that only Synchronization.Mutex guards.
import Foundation
import Synchronization

final class Counter: Sendable {
    let value = Mutex(0)
}

let counter = Counter()
let rounds = 100_000
let threads = (0..<2).map { _ in
    Thread { for _ in 0..<rounds { counter.value.withLock { $0 += 1 } } }
}
threads.forEach { $0.start() }
while counter.value.withLock({ $0 }) < 2 * rounds { usleep(1000) }
print("count \(counter.value.withLock { $0 })")
