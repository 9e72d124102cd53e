# Shared settings and helpers for scripts/kernel-test (sourced, not run).
# shellcheck shell=bash

KT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$KT_DIR/../.." && pwd)

# Everything downloaded, extracted or built lives here (git-ignored), so a second run is fast.
KT_CACHE=${KERNEL_TEST_CACHE:-$REPO_ROOT/.kernel-test}
# The Debian kernel series and flavour: 6.12 is the newest bookworm carries (mtty migrates since 6.7).
KT_SERIES=${KERNEL_TEST_SERIES:-6.12}
KT_FLAVOUR=${KERNEL_TEST_FLAVOUR:-amd64}
# How long the guest may run before it counts as hung.
KT_TIMEOUT=${KERNEL_TEST_TIMEOUT:-300}
# The guest's RAM in MiB (make test-qemu runs QEMU 10 inside it and raises it).
KT_GUEST_MEMORY=${KERNEL_TEST_MEMORY:-1024}
# The Swift release build of the in-guest binary has its own scratch path (.build* is git-ignored).
KT_SCRATCH=${KERNEL_TEST_SCRATCH:-$REPO_ROOT/.build-kernel}
SWIFT=${SWIFT:-swift}
# The name on the summary, skip and verdict lines: kernel-vfio (make test-kernel) or qemu-peer
# (make test-qemu), and the guest binary whose exit status the guest reports.
KT_NAME=${KT_NAME:-kernel-vfio}
KT_GUEST_PROGRAM=${KT_GUEST_PROGRAM:-kernel-vfio-check}

APT_INSTALL=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

kt_log() { echo "kernel-test: $*" >&2; }

# Whether this is a CI run (CI=true, as CI services and .ci/run set it).
kt_in_ci() {
    case ${CI:-} in true | TRUE | True | 1 | yes) return 0 ;; esac
    return 1
}

# The packages could not be had, so nothing can be booted: `kt_skip REASON FIX` (FIX: the command or step
# that makes it work). Outside CI it prints `$KT_NAME: SKIPPED: REASON` and `$KT_NAME: to fix: FIX`
# and exits 0. Under CI a skip would pass a run that proved nothing: it prints
# `$KT_NAME: FAILED: REASON …` and exits 1.
kt_skip() {
    local reason=$1 fix=${2:-}
    if kt_in_ci; then
        echo "$KT_NAME: FAILED: $reason (CI=$CI: what would be a skip elsewhere fails here)"
    else
        echo "$KT_NAME: SKIPPED: $reason"
    fi
    if [ -n "$fix" ]; then echo "$KT_NAME: to fix: $fix"; fi
    if kt_in_ci; then exit 1; fi
    exit 0
}

kt_die() {
    echo "kernel-test: error: $*" >&2
    exit 1
}

# Runs a step and reports its wall time.
kt_step() {
    local name=$1 start end
    shift
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    kt_log "$(awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN { printf "%-10s %6.1f s", n, e - s }')"
}

# Whether a Debian package is installed.
kt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
