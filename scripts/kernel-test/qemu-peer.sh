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
# shellcheck source=lib/steps.sh
. "$KT_DIR/lib/steps.sh"

KT_EXTRA_FETCH="qemu10:kt_qemu_resolve qemu10-get:kt_qemu_fetch tls-certs:kt_qemu_tls_certs"
KT_SWIFT_STEP=swift-peer
KT_SWIFT_BUILD=kt_build_peer_swift
KT_GUEST_INIT="$KT_DIR/qemu-peer-guest.sh"
KT_CONSOLE_NAME=qemu-peer-console.log
kt_run_steps "${1:-boot}"
