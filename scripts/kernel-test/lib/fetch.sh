# Host tools, package versions, downloads and extraction (sourced by run.sh).
# shellcheck shell=bash

# What the host runs: QEMU, the kernel's compiler and BTF tool for the out-of-tree build, cpio/xz/gzip.
# (command or library package) -> Debian package.
kt_host_packages() {
    local missing=() pair cmd pkg
    for pair in qemu-system-x86_64:qemu-system-x86 pahole:pahole x86_64-linux-gnu-gcc-12:gcc-12 \
                make:make cpio:cpio xz:xz-utils gzip:gzip ldd:libc-bin strip:binutils; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    # Libraries the kbuild tools (modpost, objtool, sign-file) link against.
    for pkg in libelf1 libssl3 zlib1g; do
        kt_installed "$pkg" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then return 0; fi
    kt_log "installing host packages: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive $SUDO "${APT_INSTALL[@]}" "${missing[@]}" >"$KT_CACHE/apt-install.log" 2>&1; then
        $SUDO apt-get update -qq >/dev/null 2>&1 || kt_skip "apt-get update failed (no package registry?)" \
            "check the network and apt's sources (/etc/apt/sources.list.d), then: ${SUDO:+sudo }apt-get update"
        DEBIAN_FRONTEND=noninteractive $SUDO "${APT_INSTALL[@]}" "${missing[@]}" >"$KT_CACHE/apt-install.log" 2>&1 ||
            kt_skip "apt-get install ${missing[*]} failed: $(tail -n 1 "$KT_CACHE/apt-install.log")" \
                "${SUDO:+sudo }apt-get update && ${SUDO:+sudo }${APT_INSTALL[*]} ${missing[*]} (apt's output: $KT_CACHE/apt-install.log)"
    fi
}

# The candidate version apt offers for a package, empty when none.
kt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }' || true
}

# Sets KT_ABI (e.g. 6.12.117+deb12), KT_VERSION (e.g. 6.12.117-1~deb12u1), KT_IMAGE_PKG, KT_BUSYBOX_VERSION
# from apt's lists: the ABI the linux-headers-<series>-<flavour> meta package points at today.
kt_resolve_versions() {
    local try
    for try in 1 2; do
        KT_ABI=$(apt-cache depends "linux-headers-$KT_SERIES-$KT_FLAVOUR" 2>/dev/null |
            sed -n "s/^ *Depends: linux-headers-\(.*\)-$KT_FLAVOUR\$/\1/p" | head -n 1 || true)
        if [ -n "$KT_ABI" ]; then break; fi
        [ "$try" = 2 ] || $SUDO apt-get update -qq >/dev/null 2>&1 || true
    done
    if [ -z "$KT_ABI" ]; then
        if [ -f "$KT_CACHE/resolved.env" ]; then
            kt_log "apt knows no linux-headers-$KT_SERIES-$KT_FLAVOUR; using the versions cached last time"
            # shellcheck disable=SC1091
            . "$KT_CACHE/resolved.env"
            return 0
        fi
        kt_skip "apt knows no linux-headers-$KT_SERIES-$KT_FLAVOUR (no bookworm-security in the package lists?)" \
            "add bookworm-security to apt's sources, then: ${SUDO:+sudo }apt-get update && apt-cache policy linux-headers-$KT_SERIES-$KT_FLAVOUR"
    fi
    KT_IMAGE_PKG="linux-image-$KT_ABI-$KT_FLAVOUR-unsigned"
    KT_VERSION=$(kt_candidate "$KT_IMAGE_PKG")
    if [ -z "$KT_VERSION" ]; then
        KT_IMAGE_PKG="linux-image-$KT_ABI-$KT_FLAVOUR"
        KT_VERSION=$(kt_candidate "$KT_IMAGE_PKG")
    fi
    [ -n "$KT_VERSION" ] || kt_skip "no installable linux-image-$KT_ABI-$KT_FLAVOUR(-unsigned)" \
        "${SUDO:+sudo }apt-get update && apt-cache policy linux-image-$KT_ABI-$KT_FLAVOUR-unsigned"
    KT_BUSYBOX_VERSION=$(kt_candidate busybox-static)
    [ -n "$KT_BUSYBOX_VERSION" ] || kt_skip "no installable busybox-static" \
        "${SUDO:+sudo }apt-get update && apt-cache policy busybox-static"
    mkdir -p "$KT_CACHE"
    cat >"$KT_CACHE/resolved.env" <<EOF
KT_ABI='$KT_ABI'
KT_VERSION='$KT_VERSION'
KT_IMAGE_PKG='$KT_IMAGE_PKG'
KT_BUSYBOX_VERSION='$KT_BUSYBOX_VERSION'
EOF
    kt_log "kernel $KT_ABI-$KT_FLAVOUR ($KT_IMAGE_PKG $KT_VERSION), busybox-static $KT_BUSYBOX_VERSION"
}

# Downloads the .debs into $KT_CACHE/debs/<version>/ unless a previous run completed that.
kt_download() {
    KT_DEBS="$KT_CACHE/debs/$KT_VERSION"
    if [ -f "$KT_DEBS/.complete" ]; then return 0; fi
    mkdir -p "$KT_DEBS"
    local pkgs=(
        "$KT_IMAGE_PKG=$KT_VERSION"
        "linux-headers-$KT_ABI-$KT_FLAVOUR=$KT_VERSION"
        "linux-headers-$KT_ABI-common=$KT_VERSION"
        "linux-kbuild-$KT_ABI=$KT_VERSION"
        "linux-source-$KT_SERIES=$KT_VERSION"
        "busybox-static=$KT_BUSYBOX_VERSION"
    )
    kt_log "downloading ${pkgs[*]}"
    if ! (cd "$KT_DEBS" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}") >"$KT_CACHE/apt-download.log" 2>&1; then
        kt_skip "apt-get download failed: $(kt_apt_error "$KT_CACHE/apt-download.log")" \
            "check that apt's mirror answers (apt's output: $KT_CACHE/apt-download.log), then run make test-kernel again"
    fi
    touch "$KT_DEBS/.complete"
}

# apt's first error in a log: an `Err:` line with the reason on the line after it, else the first `E:`
# line, else the last line.
kt_apt_error() {
    awk '/^Err:/ && err == "" { err = $0; if ((getline next_line) > 0) { sub(/^ +/, "", next_line); err = err ": " next_line } }
         /^E:/ && e == "" { e = $0 }
         { last = $0 }
         END { print (err != "" ? err : (e != "" ? e : last)) }' "$1"
}

# The one .deb of a package in the download folder.
kt_deb() {
    local f
    for f in "$KT_DEBS/$1"_*.deb; do
        [ -f "$f" ] || kt_die "missing $1 .deb in $KT_DEBS"
        echo "$f"
        return 0
    done
}

# Extracts what the later steps use into $KT_CACHE/<abi>/: the image (vmlinuz, modules), the headers and
# kbuild tree, busybox, and from the source tarball only samples/vfio-mdev/mtty.c.
kt_extract() {
    KT_WORK="$KT_CACHE/$KT_ABI"
    KT_KREL="$KT_ABI-$KT_FLAVOUR"
    KT_ROOTFS="$KT_WORK/root"
    KT_HEADERS="$KT_ROOTFS/usr/src/linux-headers-$KT_KREL"
    KT_MTTY_SRC="$KT_WORK/mtty/mtty.c"
    mkdir -p "$KT_WORK"
    if [ ! -f "$KT_WORK/.extracted" ]; then
        rm -rf "$KT_ROOTFS"
        mkdir -p "$KT_ROOTFS"
        local pkg
        for pkg in "$KT_IMAGE_PKG" "linux-headers-$KT_ABI-$KT_FLAVOUR" "linux-headers-$KT_ABI-common" \
                   "linux-kbuild-$KT_ABI" busybox-static; do
            dpkg-deb -x "$(kt_deb "$pkg")" "$KT_ROOTFS"
        done
        touch "$KT_WORK/.extracted"
    fi
    # The headers' Makefile includes the -common one by its absolute /usr/src path: point it at ours
    # (every run, so a moved checkout still works). The scripts/ and tools/ links are relative already.
    sed -i "s|^include .*/linux-headers-$KT_ABI-common/Makefile\$|include $KT_ROOTFS/usr/src/linux-headers-$KT_ABI-common/Makefile|" \
        "$KT_HEADERS/Makefile"
    if [ ! -f "$KT_MTTY_SRC" ]; then
        mkdir -p "$KT_WORK/mtty"
        dpkg-deb --fsys-tarfile "$(kt_deb "linux-source-$KT_SERIES")" |
            tar -xO "./usr/src/linux-source-$KT_SERIES.tar.xz" |
            tar -xJ -C "$KT_WORK/mtty" --strip-components=3 "linux-source-$KT_SERIES/samples/vfio-mdev/mtty.c"
        [ -f "$KT_MTTY_SRC" ] || kt_die "mtty.c not found in linux-source-$KT_SERIES"
    fi
    KT_VMLINUZ="$KT_ROOTFS/boot/vmlinuz-$KT_KREL"
    KT_MODULES="$KT_ROOTFS/lib/modules/$KT_KREL"
    [ -d "$KT_MODULES" ] || KT_MODULES="$KT_ROOTFS/usr/lib/modules/$KT_KREL"
    [ -f "$KT_VMLINUZ" ] || kt_die "no $KT_VMLINUZ in $KT_IMAGE_PKG"
    [ -d "$KT_MODULES" ] || kt_die "no $KT_MODULES in $KT_IMAGE_PKG"
}
