# Packs the guest's initramfs (sourced by run.sh): busybox, the modules in load order, the test binary
# and exactly the shared libraries ldd reports for it.
# shellcheck shell=bash

# The modules the guest loads; their dependencies are added from each module's modinfo.
KT_ROOT_MODULES=(vfio vfio_iommu_type1 mdev mtty)

# The .ko (or .ko.xz) file of a module name ('-' and '_' are the same to the kernel).
kt_module_file() {
    local name=$1 alt f
    [ "$name" = mtty ] && { echo "$KT_MTTY_KO"; return 0; }
    alt=$(echo "$name" | tr '_-' '-_')
    f=$(find "$KT_MODULES/kernel" \( -name "$name.ko" -o -name "$name.ko.*" -o -name "$alt.ko" -o -name "$alt.ko.*" \) -print -quit)
    [ -n "$f" ] || kt_die "module $name not found under $KT_MODULES"
    echo "$f"
}

# A module's uncompressed bytes.
kt_module_bytes() {
    case $1 in
        *.xz) xz -dc "$1" ;;
        *.zst) zstd -dc "$1" ;;
        *.gz) gzip -dc "$1" ;;
        *) cat "$1" ;;
    esac
}

# The modules a module depends on, from the depends= field of its .modinfo section.
kt_module_deps() {
    kt_module_bytes "$1" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}

# Appends a module to KT_LOAD_ORDER after its dependencies (depth first, each once).
kt_add_module() {
    local name=${1//-/_} dep
    case " ${KT_LOAD_ORDER[*]} " in *" $name "*) return 0 ;; esac
    for dep in $(kt_module_deps "$(kt_module_file "$name")"); do
        kt_add_module "$dep"
    done
    KT_LOAD_ORDER+=("$name")
}

# Copies a binary into the stage at DEST, stripped unless it is a shell script, with every shared
# library ldd names for it (and the loader) at the same path: `kt_stage_binary STAGE BINARY DEST`.
kt_stage_binary() {
    local stage=$1 bin=$2 dest=$3 lib
    mkdir -p "$stage$(dirname "$dest")"
    strip -o "$stage$dest" "$bin" 2>/dev/null || cp -L "$bin" "$stage$dest"
    chmod 0755 "$stage$dest"
    if ldd "$bin" | grep -q 'not found'; then
        kt_die "$bin needs libraries this host lacks: $(ldd "$bin" | awk '/not found/ { print $1 }' | tr '\n' ' ')"
    fi
    for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
        [ -f "$stage$lib" ] && continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}

kt_pack_initramfs() {
    local stage="$KT_CACHE/$KT_NAME-initramfs" m lib
    rm -rf "$stage"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,modules}
    cp "$KT_ROOTFS/bin/busybox" "$stage/bin/busybox"
    install -m 0755 "${KT_GUEST_INIT:-$KT_DIR/guest-init.sh}" "$stage/init"

    KT_LOAD_ORDER=()
    for m in "${KT_ROOT_MODULES[@]}"; do kt_add_module "$m"; done
    for m in "${KT_LOAD_ORDER[@]}"; do
        kt_module_bytes "$(kt_module_file "$m")" >"$stage/modules/$m.ko"
    done
    printf '%s\n' "${KT_LOAD_ORDER[@]}" >"$stage/modules/order"
    kt_log "modules in load order: ${KT_LOAD_ORDER[*]}"

    # The binary, stripped, and the libraries (and loader) it needs, at the paths ldd names.
    if [ -n "${KT_CHECK_BIN:-}" ]; then kt_stage_binary "$stage" "$KT_CHECK_BIN" /kernel-vfio-check; fi
    # make test-qemu adds its binaries and QEMU 10's tree (lib/qemu10.sh).
    if declare -F kt_initramfs_extra >/dev/null; then kt_initramfs_extra "$stage"; fi
    kt_log "libraries: $(cd "$stage" && find lib* usr/lib* -type f 2>/dev/null | tr '\n' ' ')"

    KT_INITRD="$KT_CACHE/${KT_NAME}-initramfs.cpio.gz"
    (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet) |
        gzip -6 >"$KT_INITRD"
    kt_log "initramfs $(du -h "$KT_INITRD" | cut -f1)"
}
