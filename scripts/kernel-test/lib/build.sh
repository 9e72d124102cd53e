# Builds mtty.ko out of tree and the in-guest Swift binary (sourced by run.sh).
# shellcheck shell=bash

# mtty.ko against the extracted headers, with the kernel's own compiler (gcc-12, from .kernelvariables).
# mtty.c comes from Debian's linux-source package at test time and is never committed.
kt_build_mtty() {
    local dir="$KT_WORK/mtty"
    KT_MTTY_KO="$dir/mtty.ko"
    if [ -f "$KT_MTTY_KO" ] && [ "$KT_MTTY_KO" -nt "$KT_MTTY_SRC" ]; then return 0; fi
    echo 'obj-m := mtty.o' >"$dir/Kbuild"
    if ! make -C "$KT_HEADERS" M="$dir" modules >"$dir/build.log" 2>&1; then
        tail -n 30 "$dir/build.log" >&2
        kt_die "building mtty.ko failed (log: $dir/build.log)"
    fi
    [ -f "$KT_MTTY_KO" ] || kt_die "no mtty.ko after the build"
}

# The release binary with the Swift runtime linked in, so the guest needs only glibc's libraries.
kt_build_swift() {
    (cd "$REPO_ROOT" && "$SWIFT" build -c release --product kernel-vfio-check --static-swift-stdlib \
        --scratch-path "$KT_SCRATCH") >"$KT_CACHE/swift-build.log" 2>&1 || {
        tail -n 30 "$KT_CACHE/swift-build.log" >&2
        kt_die "swift build of kernel-vfio-check failed (log: $KT_CACHE/swift-build.log)"
    }
    local bin
    bin=$(cd "$REPO_ROOT" && "$SWIFT" build -c release --product kernel-vfio-check --static-swift-stdlib \
        --scratch-path "$KT_SCRATCH" --show-bin-path)
    KT_CHECK_BIN="$bin/kernel-vfio-check"
    [ -x "$KT_CHECK_BIN" ] || kt_die "no $KT_CHECK_BIN"
}
