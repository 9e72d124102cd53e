# The steps every kernel-test run takes, in order, shared by run.sh (make test-kernel) and qemu-peer.sh
# (make test-qemu): host tools, the kernel's packages, mtty.ko, a Swift build, the initramfs, the boot and
# the verdict. A run stops after the step its argument names (fetch, build, initramfs; boot: all).
#
# A caller sources the libraries first and may set, before calling kt_run_steps:
#   KT_EXTRA_FETCH  "name:function" words, run after the kernel's packages (qemu-peer: QEMU 10)
#   KT_SWIFT_STEP   the name of the Swift build step (default swift)
#   KT_SWIFT_BUILD  the function that builds it (default kt_build_swift)
#   KT_GUEST_INIT, KT_CONSOLE_NAME  as lib/initramfs.sh and lib/boot.sh read them

# kt_run_steps LAST
kt_run_steps() {
    local last=${1:-boot}
    case $last in fetch | build | initramfs | boot) ;; *) kt_die "unknown step $last (fetch, build, initramfs, boot)" ;; esac
    [ "$(uname -m)" = x86_64 ] || kt_die "needs an x86_64 host (this is $(uname -m))"
    mkdir -p "$KT_CACHE"
    local total_start total_end pair
    total_start=$(date +%s.%N)

    kt_step host-tools kt_host_packages
    kt_step versions kt_resolve_versions
    kt_step download kt_download
    kt_step extract kt_extract
    for pair in ${KT_EXTRA_FETCH:-}; do
        kt_step "${pair%%:*}" "${pair#*:}"
    done
    [ "$last" = fetch ] && return 0

    kt_step mtty.ko kt_build_mtty
    kt_step "${KT_SWIFT_STEP:-swift}" "${KT_SWIFT_BUILD:-kt_build_swift}"
    [ "$last" = build ] && return 0

    kt_step initramfs kt_pack_initramfs
    [ "$last" = initramfs ] && return 0

    kt_step boot kt_boot
    total_end=$(date +%s.%N)
    kt_log "$(awk -v s="$total_start" -v e="$total_end" 'BEGIN { printf "total      %6.1f s", e - s }')"
    kt_verdict "$KT_CONSOLE_LOG"
}
