#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets of Fuzz/ (AddressSanitizer and coverage instrumentation
# on the whole build, libFuzzer linked into the targets), writes the seed corpora (committed
# fixtures and match tables, captures of real migrations), then runs every target for
# FUZZ_SECONDS seconds, one after the other, and prints one line per target:
#   fuzz: TARGET: EXECS executions in SECS s (RATE/s), corpus N inputs, RESULT
# Exit status 1 when any target found a crash, a timeout (hang), an out-of-memory or a leak;
# its reproducer is kept in .fuzz/artifacts/ (replay: Fuzz/.build/release/TARGET FILE).
#
# Usage: scripts/fuzz.sh [TARGET...]   (default: every target)
# Environment: FUZZ_SECONDS (default 60), FUZZ_DIR (default .fuzz), FUZZ_JOBS (targets at a time,
# default 1), SWIFT, FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."

SWIFT=${SWIFT:-swift}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_DIR=${FUZZ_DIR:-.fuzz}
ALL_TARGETS=(fuzz-stream-walker fuzz-destination fuzz-return-path fuzz-multifd fuzz-mlx5-records fuzz-match-table fuzz-sysfs
             fuzz-section-filter fuzz-vfio-replies)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

# The flags -sanitize=fuzzer gives the code it compiles, minus linking libFuzzer's main (which
# would replace the main of the match-table compiler the build runs): libFuzzer is linked into
# the fuzz targets alone (Fuzz/Package.swift). Release configuration with testability: the
# targets that reach internal types (the return-path reader, the channel classifier, the sysfs
# readers, the VFIO syscall seam and device client) use @testable imports.
FLAGS=(-c release -Xswiftc -enable-testing -Xswiftc -sanitize=address
       -Xswiftc -sanitize-coverage=edge,indirect-calls,trace-cmp,inline-8bit-counters,pc-table)
echo "fuzz: building Fuzz/ (AddressSanitizer + libFuzzer)"
(cd Fuzz && "$SWIFT" build "${FLAGS[@]}")
BIN=Fuzz/.build/release

mkdir -p "$FUZZ_DIR"/{seeds,corpus,artifacts,logs}
echo "fuzz: writing the seed corpora"
# The seed tool is instrumented too; what Foundation keeps until exit is not a finding here.
ASAN_OPTIONS=detect_leaks=0 "$BIN/fuzz-seeds" "$FUZZ_DIR/seeds" .

# Runs one target; its summary line goes to logs/TARGET.summary, its status to logs/TARGET.status.
run_target() {
    local target=$1 log="$FUZZ_DIR/logs/$1.log" status=0 extra=()
    mkdir -p "$FUZZ_DIR/corpus/$target" "$FUZZ_DIR/seeds/$target"
    case $target in
        # Each input runs a whole engine (threads, a machine, a migration): libFuzzer's per-input
        # leak check (a LeakSanitizer scan whenever mallocs and frees differ) costs 10x the
        # throughput there. A source or destination process runs one migration; the sanitizer
        # runs of the test suite check the engines for leaks.
        fuzz-destination|fuzz-return-path|fuzz-stream-walker) extra=(-detect_leaks=0) ;;
    esac
    # -timeout: one input may take at most 20 s (the engine targets' own deadlines are 5 s);
    # -rss_limit_mb / -malloc_limit_mb: what one input may make the process hold.
    # shellcheck disable=SC2086
    "$BIN/$target" -max_total_time="$FUZZ_SECONDS" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/artifacts/$target-" "${extra[@]}" ${FUZZ_ARGS:-} \
        "$FUZZ_DIR/corpus/$target" "$FUZZ_DIR/seeds/$target" > "$log" 2>&1 || status=$?
    local execs rate inputs result
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    inputs=$(find "$FUZZ_DIR/corpus/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result="no crash, hang, leak or sanitizer report"
    else
        result="FAILED (exit $status): $(grep -m1 -E 'ERROR:|SUMMARY:|==[0-9]+== ' "$log" || tail -1 "$log")"
    fi
    echo "${execs:-0}" > "$FUZZ_DIR/logs/$target.execs"
    echo "$status" > "$FUZZ_DIR/logs/$target.status"
    echo "fuzz: $target: ${execs:-0} executions in $FUZZ_SECONDS s (${rate:-0}/s), corpus $inputs inputs, $result" \
        | tee "$FUZZ_DIR/logs/$target.summary"
}

# FUZZ_JOBS targets at a time (default 1: the machine may be shared).
running=0
for target in "${TARGETS[@]}"; do
    rm -f "$FUZZ_DIR/logs/$target".{summary,status,execs}
    run_target "$target" &
    running=$((running + 1))
    if [ "$running" -ge "${FUZZ_JOBS:-1}" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

failed=0
total=0
echo "fuzz: summary"
for target in "${TARGETS[@]}"; do
    cat "$FUZZ_DIR/logs/$target.summary" 2>/dev/null || echo "fuzz: $target: did not run"
    [ "$(cat "$FUZZ_DIR/logs/$target.status" 2>/dev/null || echo 1)" -eq 0 ] || failed=1
    total=$((total + $(cat "$FUZZ_DIR/logs/$target.execs" 2>/dev/null || echo 0)))
done
echo "fuzz: $total executions in all"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: FAILED; reproducers in $FUZZ_DIR/artifacts/, logs in $FUZZ_DIR/logs/"
    exit 1
fi
