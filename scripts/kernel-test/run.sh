#!/usr/bin/env bash
# make test-kernel: runs kernel-vfio-check against the real Linux VFIO migration uAPI.
#
# Downloads Debian's prebuilt 6.12 kernel, its headers and kbuild, linux-source (for mtty.c only) and
# busybox-static with apt-get; builds mtty.ko out of tree and the Swift check with a static Swift runtime;
# packs an initramfs; boots it under qemu-system-x86_64 with TCG and reads the summary line from the
# console. When the packages cannot be had it prints `kernel-vfio: SKIPPED: <reason>` and the command to
# fix it, and exits 0 -- except with CI=true, where that is a failure (exit 1). Any other problem exits
# non-zero too, as does a console whose verdict is not clean (lib/verdict.sh). See docs/kernel-test.md.
#
# Usage: scripts/kernel-test/run.sh [fetch|build|initramfs|boot]   (default: all, in that order; a later
#        step runs the earlier ones it needs, which are cached)
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/fetch.sh
. "$KT_DIR/lib/fetch.sh"
# shellcheck source=lib/build.sh
. "$KT_DIR/lib/build.sh"
# shellcheck source=lib/initramfs.sh
. "$KT_DIR/lib/initramfs.sh"
# shellcheck source=lib/boot.sh
. "$KT_DIR/lib/boot.sh"
# shellcheck source=lib/verdict.sh
. "$KT_DIR/lib/verdict.sh"

last=${1:-boot}
case $last in fetch | build | initramfs | boot) ;; *) kt_die "unknown step $last (fetch, build, initramfs, boot)" ;; esac

# The guest runs Debian's amd64 kernel and the host-built binary: both must be x86_64.
[ "$(uname -m)" = x86_64 ] || kt_die "needs an x86_64 host (this is $(uname -m))"
mkdir -p "$KT_CACHE"
total_start=$(date +%s.%N)

kt_step host-tools kt_host_packages
kt_step versions kt_resolve_versions
kt_step download kt_download
kt_step extract kt_extract
[ "$last" = fetch ] && exit 0

kt_step mtty.ko kt_build_mtty
kt_step swift kt_build_swift
[ "$last" = build ] && exit 0

kt_step initramfs kt_pack_initramfs
[ "$last" = initramfs ] && exit 0

kt_step boot kt_boot
total_end=$(date +%s.%N)
kt_log "$(awk -v s="$total_start" -v e="$total_end" 'BEGIN { printf "total      %6.1f s", e - s }')"
kt_verdict "$KT_CONSOLE_LOG"
