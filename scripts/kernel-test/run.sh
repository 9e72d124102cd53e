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
# shellcheck source=lib/steps.sh
. "$KT_DIR/lib/steps.sh"

kt_run_steps "${1:-boot}"
