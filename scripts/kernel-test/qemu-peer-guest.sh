#!/bin/busybox sh
# /init of the make test-qemu guest: loads VFIO and mtty, creates eight mtty-2 mdevs and runs the steps
# between QEMU 10 and Switchover (docs/qemu-peer-test.md). Each step prints `PASS name` or
# `FAIL name: reason`; the run ends with `qemu-peer: N passed, M failed` and
# `guest: qemu-peer-guest exit N`, which the host's verdict (lib/verdict.sh) reads.

if [ "${1:-}" != inner ]; then
    /bin/busybox mkdir -p /proc /sys /dev /tmp
    /bin/busybox --install -s
    mount -t devtmpfs devtmpfs /dev
    exec </dev/console >/dev/console 2>&1
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    # Every line of the steps goes to the console through the kernel log (level 2, above loglevel=3's
    # cut): the kernel writes the serial port by polling, while a tty's output, which waits for the
    # UART's transmit interrupt, stalled for good under the load of the nested QEMU.
    /bin/busybox sh /init inner 2>&1 | while IFS= read -r line; do printf '<2>%s\n' "$line" >/dev/kmsg; done
    if grep -q 'kt.shell=1' /proc/cmdline; then
        echo "guest: shell (exit or Ctrl-D powers off; Ctrl-A X quits QEMU)"
        setsid cttyhack sh
    fi
    poweroff -f
fi

# One mdev per role: QEMU's source, our destination for its file, our live source, QEMU's destination
# (mtty keeps its migration state across opens, so no device serves twice).
QEMU_SRC=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0011
OUR_DST=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0012
OUR_SRC=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0013
QEMU_DST=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0014
# The TLS run's pair: our source, QEMU's destination.
OUR_TLS_SRC=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0015
QEMU_TLS_DST=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0016
# QEMU → Switchover live: QEMU's source, our destination.
QEMU_LIVE_SRC=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0017
OUR_LIVE_DST=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0018
PORT=4444
TLS_PORT=4445
LIVE_PORT=4446
QEMU=/usr/bin/qemu-system-x86_64
RESULTS=/tmp/results

setup_failed() {
    echo "FAIL guest-setup: $*"
    dmesg | grep -v '^<' | tail -n 20 | sed 's/^/  dmesg: /'
    echo "qemu-peer: 0 passed, 1 failed"
    echo "guest: qemu-peer-guest exit 1"
    exit 1
}

pass() { echo "PASS $1" | tee -a "$RESULTS"; }
fail() { echo "FAIL $1: $2" | tee -a "$RESULTS"; }
info() { echo "  info: $*"; }

echo "guest: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo)"
while read -r m; do
    insmod "/modules/$m.ko" || setup_failed "insmod $m"
done </modules/order
# The live steps run over TCP on the loopback interface, which starts down.
ifconfig lo 127.0.0.1 up || setup_failed "ifconfig lo up"
types=/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2
[ -d "$types" ] || setup_failed "no $types"
for u in $QEMU_SRC $OUR_DST $OUR_SRC $QEMU_DST $OUR_TLS_SRC $QEMU_TLS_DST $QEMU_LIVE_SRC $OUR_LIVE_DST; do
    echo "$u" >"$types/create" || setup_failed "create $u"
done
"$QEMU" --version | head -n 1 | sed 's/^/guest: /' || setup_failed "$QEMU does not run"
MACHINE=$("$QEMU" -M help | sed -n 's/^q35 .*(alias of \(pc-q35-[0-9.]*\)).*/\1/p')
[ -n "$MACHINE" ] || setup_failed "no q35 alias in $QEMU -M help"
echo "guest: q35 is $MACHINE"
: >"$RESULTS"

# --- QEMU processes, driven through their HMP monitor on a fifo ---------------------------------------
# qemu_start NAME FD UUID ARGS...: QEMU with the mtty device at 00:04.0; its monitor reads /tmp/NAME.mon,
# which this shell holds open on FD (3 or 4); its output goes to /tmp/NAME.log.
qemu_start() {
    local name=$1 fd=$2 uuid=$3
    shift 3
    rm -f "/tmp/$name.mon" "/tmp/$name.log"
    mkfifo "/tmp/$name.mon"
    echo "  qemu[$name]: $QEMU -accel tcg,tb-size=64 -M q35 -m 64 -nodefaults -display none -monitor stdio" \
        "-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/$uuid,enable-migration=on,x-device-dirty-page-tracking=off,addr=0x4 $*"
    "$QEMU" -accel tcg,tb-size=64 -M q35 -m 64 -nodefaults -display none -monitor stdio \
        -device "vfio-pci,sysfsdev=/sys/bus/mdev/devices/$uuid,enable-migration=on,x-device-dirty-page-tracking=off,addr=0x4" \
        "$@" <"/tmp/$name.mon" >>"/tmp/$name.log" 2>&1 &
    eval "${name}_pid=$!"
    eval "exec $fd>/tmp/$name.mon"
}

# hmp FD COMMAND: one monitor command.
hmp() { eval "echo \"\$2\" >&$1"; }

# Lines of /tmp/NAME.log after line MARK.
log_since() { tail -n "+$(($2 + 1))" "/tmp/$1.log"; }
log_mark() { wc -l <"/tmp/$1.log"; }

# wait_migration NAME FD SECONDS: asks `info migrate` every 2 s until the status is completed (0) or
# failed/cancelled (1), or the time is up (1). Prints the final answer's lines as info.
wait_migration() {
    local name=$1 fd=$2 limit=$3 waited=0 mark answer
    while [ "$waited" -lt "$limit" ]; do
        mark=$(log_mark "$name")
        hmp "$fd" "info migrate"
        sleep 2
        waited=$((waited + 2))
        answer=$(log_since "$name" "$mark")
        if echo "$answer" | grep -Eiq 'status:[[:space:]]*completed'; then
            echo "$answer" | grep -Ei 'status|total time|downtime:' | head -n 3 | sed "s/^/  qemu[$name]: /"
            return 0
        fi
        if echo "$answer" | grep -Eiq 'status:[[:space:]]*(failed|cancelled)'; then
            echo "$answer" | grep -Ei 'status' | head -n 2 | sed "s/^/  qemu[$name]: /"
            return 1
        fi
        if ! kill -0 "$(eval echo "\$${name}_pid")" 2>/dev/null; then
            info "QEMU $name has exited"
            return 1
        fi
    done
    info "no completed migration on $name after $limit s"
    return 1
}

# qemu_stop NAME FD [quiet]: quit through the monitor, kill after 20 s; prints the end of QEMU's log
# unless told to be quiet.
qemu_stop() {
    local name=$1 fd=$2 quiet=${3:-} pid i
    pid=$(eval echo "\$${name}_pid")
    hmp "$fd" "quit" 2>/dev/null
    for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null
    eval "exec $fd>&-"
    [ -n "$quiet" ] && return 0
    # QEMU's own messages (error_report lines name the binary), not the monitor's echo.
    grep -E 'qemu-system-x86_64:|rror' "/tmp/$name.log" | grep -v '\[K' | tail -n 15 | sed "s/^/  qemu[$name] log: /"
}

# --- 1. QEMU → file --------------------------------------------------------------------------------
step=qemu-saves-vm-to-file
qemu_start qsrc 3 "$QEMU_SRC"
sleep 3
hmp 3 'migrate "exec:cat > /tmp/qemu-source.mig"'
if wait_migration qsrc 3 240 && [ -s /tmp/qemu-source.mig ]; then
    info "QEMU's file: $(wc -c </tmp/qemu-source.mig) bytes"
    pass $step
    qemu_stop qsrc 3 quiet
else
    fail $step "QEMU 10 did not complete the migration to a file"
    qemu_stop qsrc 3
fi

# --- 2. switchover inspect lists it -----------------------------------------------------------------
step=switchover-inspects-qemu-file
if [ -s /tmp/qemu-source.mig ]; then
    /switchover inspect /tmp/qemu-source.mig >/tmp/inspect.txt 2>&1
    rc=$?
    # The header and the VFIO device's records only: the serial console is slow.
    head -n 4 /tmp/inspect.txt | sed 's/^/  inspect: /'
    grep -E '/vfio|SWITCHOVER|records' /tmp/inspect.txt | head -n 20 | sed 's/^/  inspect: /'
    info "switchover inspect listed $(wc -l </tmp/inspect.txt) lines"
    if [ "$rc" = 0 ] && grep -q '0000:00:04.0/vfio' /tmp/inspect.txt; then
        pass $step
    else
        fail $step "switchover inspect exited $rc or did not list 0000:00:04.0/vfio"
    fi
else
    fail $step "no file from QEMU"
fi

# --- 3. Switchover loads QEMU's VFIO section into another mtty -----------------------------------------
if [ -s /tmp/qemu-source.mig ]; then
    /qemu-peer-check file-to-device /tmp/qemu-source.mig "$OUR_DST" | tee /tmp/step3.txt
    grep -E '^(PASS|FAIL) ' /tmp/step3.txt >>"$RESULTS"
    grep -qE '^(PASS|FAIL) ' /tmp/step3.txt || fail qemu-file-loaded-by-switchover "qemu-peer-check printed no verdict"
else
    fail qemu-file-loaded-by-switchover "no file from QEMU"
fi

# --- 3b. The same file through the command line: switchover incoming --devices-only, a simulated mtty --
step=switchover-incoming-loads-qemu-file
if [ -s /tmp/qemu-source.mig ]; then
    /switchover incoming --listen file:/tmp/qemu-source.mig --devices-only --machine-type "$MACHINE" \
        --device mtty:name=0000:00:04.0 --memory 1MiB --json --no-progress >/tmp/step3b.txt 2>/tmp/step3b.err
    rc=$?
    sed 's/^/  incoming: /' /tmp/step3b.err | head -n 5
    # The device's loaded bytes (the JSON's digests) against the DATA bytes of QEMU's file.
    loaded=$(tr ',' '\n' </tmp/step3b.txt | sed -n 's/.*"bytes" *: *\([0-9]*\).*/\1/p' | tail -n 1)
    qemu_bytes=$(($(/qemu-peer-check file-data /tmp/qemu-source.mig | sed -n 's/^data //p' | wc -c) / 2))
    info "the simulated mtty loaded ${loaded:-?} bytes; QEMU's file holds $qemu_bytes"
    if [ "$rc" = 0 ] && grep -q 'loading 0000:00:04.0/vfio' /tmp/step3b.err && [ "${loaded:-0}" = "$qemu_bytes" ]; then
        pass $step
    else
        fail $step "switchover incoming exited $rc, or loaded ${loaded:-no} bytes of QEMU's $qemu_bytes"
    fi
else
    fail $step "no file from QEMU"
fi

# --- 4. Switchover → QEMU, live over TCP, return path and switchover-ack on both ends -----------------
qemu_start qdst 4 "$QEMU_DST" -S -incoming defer
sleep 3
hmp 4 "migrate_set_capability return-path on"
hmp 4 "migrate_set_capability switchover-ack on"
hmp 4 "migrate_incoming tcp:127.0.0.1:$PORT"
/qemu-peer-check source "$OUR_SRC" 127.0.0.1 "$PORT" "$MACHINE" | tee /tmp/step4.txt
grep -E '^(PASS|FAIL) ' /tmp/step4.txt >>"$RESULTS"
grep -qE '^(PASS|FAIL) ' /tmp/step4.txt || fail switchover-source-to-qemu-live "qemu-peer-check printed no verdict"
SENT=$(sed -n 's/^sent //p' /tmp/step4.txt)

step=qemu-destination-completed
if wait_migration qdst 4 120; then
    pass $step
else
    fail $step "QEMU 10 did not report the incoming migration completed"
fi

# --- 5. QEMU saves what it received: its mtty data equals what our source sent --------------------------
step=qemu-saves-what-switchover-sent
# The guest started with -S: run it (the device leaves RESUMING only when the VM starts; a paused
# destination's migration fails with "Invalid device state 4"). A file has no return path: both
# capabilities off for the way out.
hmp 4 "cont"
sleep 3
hmp 4 "migrate_set_capability switchover-ack off"
hmp 4 "migrate_set_capability return-path off"
hmp 4 'migrate "exec:cat > /tmp/qemu-destination.mig"'
if wait_migration qdst 4 240 && [ -s /tmp/qemu-destination.mig ]; then
    /qemu-peer-check file-data /tmp/qemu-destination.mig >/tmp/step5.txt
    SAVED=$(sed -n 's/^data //p' /tmp/step5.txt)
    grep 'info:' /tmp/step5.txt
    info "our source sent:  $SENT"
    info "QEMU then saved:  $SAVED"
    if [ -n "$SENT" ] && [ "$SENT" = "$SAVED" ]; then
        pass $step
    else
        fail $step "the mtty data in QEMU's file differs from what Switchover sent"
    fi
else
    fail $step "QEMU 10 did not save the received VM to a file"
fi
if [ "$(grep -c '^FAIL ' "$RESULTS")" = 0 ]; then qemu_stop qdst 4 quiet; else qemu_stop qdst 4; fi

# --- 6. Switchover → QEMU, live over TLS: QEMU's tls-creds-x509 (verify-peer=on), our MigrationTLS client -----
qemu_start qtls 3 "$QEMU_TLS_DST" -S -incoming defer \
    -object tls-creds-x509,id=tls0,dir=/tls/server,endpoint=server,verify-peer=on
sleep 3
hmp 3 "migrate_set_capability return-path on"
hmp 3 "migrate_set_capability switchover-ack on"
hmp 3 "migrate_set_parameter tls-creds tls0"
hmp 3 "migrate_incoming tcp:127.0.0.1:$TLS_PORT"
/qemu-peer-check source "$OUR_TLS_SRC" 127.0.0.1 "$TLS_PORT" "$MACHINE" /tls/client | tee /tmp/step6.txt
grep -E '^(PASS|FAIL) ' /tmp/step6.txt >>"$RESULTS"
grep -qE '^(PASS|FAIL) ' /tmp/step6.txt || fail switchover-source-to-qemu-tls "qemu-peer-check printed no verdict"
step=qemu-tls-destination-completed
if wait_migration qtls 3 120; then
    pass $step
    qemu_stop qtls 3 quiet
else
    fail $step "QEMU 10 did not report the incoming TLS migration completed"
    qemu_stop qtls 3
fi

# --- 7. QEMU → Switchover, live over TCP: every section but the VFIO device's skipped on the way in ------
/qemu-peer-check destination "$OUR_LIVE_DST" 127.0.0.1 "$LIVE_PORT" "$MACHINE" >/tmp/step7.txt 2>&1 &
our_dst_pid=$!
qemu_start qlive 3 "$QEMU_LIVE_SRC"
sleep 3
# A guest's writes through QEMU, so the device's state is not a fresh one: three bytes into port 0's FIFO
# at the I/O address the BIOS gave BAR0 (`info pci`), as step 4's source does through VFIO.
# The BIOS assigns BAR0 some time after start (TCG inside TCG: seconds to a minute under load), and
# QEMU answers `info pci` when it gets to it: ask every 2 s until BAR0 has an address, for up to 120 s.
io=""
for _ in $(seq 1 60); do
    mark=$(log_mark qlive)
    hmp 3 "info pci"
    sleep 2
    io=$(log_since qlive "$mark" | sed -n '/device *4,/,/BAR0/s/.*BAR0: I\/O at \(0x[0-9a-f]*\).*/\1/p' | head -n 1)
    case "$io" in "" | 0x0 | 0xffff*) io="" ;; *) break ;; esac
done
info "QEMU's mtty BAR0: I/O at ${io:-?}"
if [ -n "$io" ]; then
    for b in 0x51 0x45 0x4d; do hmp 3 "o /b $io $b"; done
fi
hmp 3 "migrate_set_capability return-path on"
hmp 3 "migrate_set_capability switchover-ack on"
hmp 3 "migrate tcp:127.0.0.1:$LIVE_PORT"
step=qemu-source-to-switchover-completed
if wait_migration qlive 3 240; then
    pass $step
    qemu_stop qlive 3 quiet
else
    fail $step "QEMU 10 did not report the migration to Switchover completed"
    qemu_stop qlive 3
fi
for i in $(seq 1 60); do kill -0 "$our_dst_pid" 2>/dev/null || break; sleep 1; done
kill -9 "$our_dst_pid" 2>/dev/null
sed 's/^/  [destination] /' /tmp/step7.txt | grep -v '^  \[destination\] \(PASS\|FAIL\) '
grep -E '^(PASS|FAIL) ' /tmp/step7.txt | tee -a "$RESULTS"
grep -qE '^(PASS|FAIL) ' /tmp/step7.txt || fail qemu-source-to-switchover-live "qemu-peer-check printed no verdict"
step=switchover-holds-what-qemu-sent
LOADED=$(sed -n 's/^loaded //p' /tmp/step7.txt)
if [ -n "$io" ] && echo "$LOADED" | grep -q 51454d; then
    pass $step
else
    fail $step "the device our destination loaded does not hold the bytes written through QEMU (BAR0 ${io:-unknown}): ${LOADED:-nothing}"
fi

passed=$(grep -c '^PASS ' "$RESULTS")
failed=$(grep -c '^FAIL ' "$RESULTS")
echo "qemu-peer: $passed passed, $failed failed"
rc=0
[ "$failed" = 0 ] || rc=1
echo "guest: qemu-peer-guest exit $rc"
exit "$rc"
