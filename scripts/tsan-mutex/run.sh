#!/usr/bin/env bash
# Shows why scripts/tsan.supp exists: ThreadSanitizer reports a data race on state that only
# Synchronization.Mutex guards (mutex.swift), and none when NSLock guards it (nslock.swift).
# Both programs count to 200000 exactly: the mutual exclusion holds; the report is false.
#
# Mutex's fast path is an inlined compare-exchange TSan sees; under contention the lock is
# handed over by FUTEX_LOCK_PI / FUTEX_UNLOCK_PI system calls inside libswiftSynchronization.so
# (_MutexHandle._lockSlow / _unlockSlow), which is not instrumented, so TSan sees no
# happens-before edge between one holder's accesses and the next one's.
set -euo pipefail
cd "$(dirname "$0")"
SWIFTC=${SWIFTC:-swiftc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for program in mutex nslock; do
    "$SWIFTC" -sanitize=thread -g "$program.swift" -o "$out/$program"
    status=0
    "$out/$program" > "$out/$program.log" 2>&1 || status=$?
    echo "$program.swift: $(grep -c 'WARNING: ThreadSanitizer' "$out/$program.log") ThreadSanitizer report(s), exit $status, $(grep '^count' "$out/$program.log")"
done
