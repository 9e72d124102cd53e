# Boots the guest under QEMU (TCG) and reads the result from its console (sourced by run.sh).
# shellcheck shell=bash

kt_boot() {
    KT_CONSOLE_LOG="$KT_CACHE/${KT_CONSOLE_NAME:-console.log}"
    local rc=0
    if [ "${KERNEL_TEST_SHELL:-0}" = 1 ]; then
        # Debugging: the guest runs the check, then opens a shell on this terminal (Ctrl-A X quits QEMU).
        exec qemu-system-x86_64 -accel tcg -smp 2 -m "$KT_GUEST_MEMORY" -no-reboot -display none -serial mon:stdio -nic none \
            -kernel "$KT_VMLINUZ" -initrd "$KT_INITRD" -append 'console=ttyS0 panic=-1 quiet loglevel=3 kt.shell=1'
    fi
    kt_log "booting $KT_KREL under qemu-system-x86_64 (TCG), console log $KT_CONSOLE_LOG"
    # Like -nographic, but the firmware keeps to the (invisible) VGA screen, so the serial console
    # carries only the kernel and the guest; no NIC, so no iPXE option ROM either.
    timeout --kill-after=10 "$KT_TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m "$KT_GUEST_MEMORY" -no-reboot \
        -display none -monitor none -serial stdio -nic none \
        -kernel "$KT_VMLINUZ" -initrd "$KT_INITRD" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3${KT_APPEND_EXTRA:+ $KT_APPEND_EXTRA}" </dev/null 2>&1 |
        tr -d '\r' | tee "$KT_CONSOLE_LOG" || rc=$?
    # With pipefail rc is QEMU's status unless tr or tee failed: 124 when timeout stopped it with SIGTERM,
    # 125-127 when timeout could not run it, 128 + n when signal n ended it (9 also when timeout had to
    # follow up with SIGKILL).
    case $rc in
        0) ;;
        124) kt_die "the guest did not power off within ${KT_TIMEOUT} s: QEMU was stopped (log: $KT_CONSOLE_LOG)" ;;
        125 | 126 | 127) kt_die "could not run qemu-system-x86_64 (timeout exited with status $rc)" ;;
        *)
            if [ "$rc" -gt 128 ]; then
                kt_die "qemu-system-x86_64 was ended by signal $((rc - 128)) (status $rc; log: $KT_CONSOLE_LOG)"
            fi
            kt_die "qemu-system-x86_64 exited with status $rc (log: $KT_CONSOLE_LOG)"
            ;;
    esac
}
