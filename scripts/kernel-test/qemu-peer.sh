#!/usr/bin/env bash
# make test-qemu: migrations between Switchover and a real QEMU 10 with a real mtty device.
#
# What make test-kernel fetches and builds (Debian's 6.12 kernel, mtty.ko, busybox), plus QEMU 10
# from Debian's bookworm-backports (lib/qemu10.sh) and the release binaries qemu-peer-check and
# switchover; the guest (/init = qemu-peer-guest.sh) creates four mtty devices and runs the steps of
# docs/qemu-peer-test.md, printing `PASS name` / `FAIL name: reason` and `qemu-peer: N passed, M failed`.
# The verdict and the skip rules are make test-kernel's (lib/verdict.sh, kt_skip: with CI=true a package
# that cannot be had fails the run).
#
# Usage: scripts/kernel-test/qemu-peer.sh [fetch|build|initramfs|boot]   (default: all)
set -euo pipefail

export KT_NAME=qemu-peer KT_GUEST_PROGRAM=qemu-peer-guest
# TCG inside TCG: the guest runs two QEMU processes of its own, one after the other.
export KERNEL_TEST_TIMEOUT=${KERNEL_TEST_TIMEOUT:-900}
export KERNEL_TEST_MEMORY=${KERNEL_TEST_MEMORY:-1536}
# The guest's lines reach the console through the kernel log (qemu-peer-guest.sh): printk writes the
# serial port by polling, where the tty's interrupt-driven output stalled for good under the load of a
# nested QEMU. No rate limit on /dev/kmsg, no timestamps on the lines.
export KT_APPEND_EXTRA='printk.devkmsg=on printk.time=0'

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
# shellcheck source=lib/qemu10.sh
. "$KT_DIR/lib/qemu10.sh"

last=${1:-boot}
case $last in fetch | build | initramfs | boot) ;; *) kt_die "unknown step $last (fetch, build, initramfs, boot)" ;; esac
[ "$(uname -m)" = x86_64 ] || kt_die "needs an x86_64 host (this is $(uname -m))"
mkdir -p "$KT_CACHE"
total_start=$(date +%s.%N)

kt_step host-tools kt_host_packages
kt_step versions kt_resolve_versions
kt_step download kt_download
kt_step extract kt_extract
kt_step qemu10 kt_qemu_resolve
kt_step qemu10-get kt_qemu_fetch
[ "$last" = fetch ] && exit 0

kt_step mtty.ko kt_build_mtty
kt_step swift-peer kt_build_peer_swift
[ "$last" = build ] && exit 0

KT_GUEST_INIT="$KT_DIR/qemu-peer-guest.sh"
KT_CONSOLE_NAME=qemu-peer-console.log
kt_step initramfs kt_pack_initramfs
[ "$last" = initramfs ] && exit 0

kt_step boot kt_boot
total_end=$(date +%s.%N)
kt_log "$(awk -v s="$total_start" -v e="$total_end" 'BEGIN { printf "total      %6.1f s", e - s }')"
kt_verdict "$KT_CONSOLE_LOG"
