#!/bin/busybox sh
# /init of the kernel-test guest: loads VFIO and mtty, creates two mtty-2 mdevs, runs kernel-vfio-check
# on them and powers off. Every line goes to the serial console, which the host reads.

/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

# Fixed names for the two devices: the source and the destination of the migration.
SRC=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0001
DST=6a1e3c5d-0b7f-4c2a-9d10-5e7a0f1c0002

# A setup problem still ends with the summary line, so the host reports it as a failure.
setup_failed() {
    echo "FAIL guest-setup: $*"
    dmesg | tail -n 20 | sed 's/^/  dmesg: /'
    echo "kernel-vfio: 0 passed, 1 failed"
    poweroff -f
}

echo "guest: kernel $(uname -r), $(nproc) cpus"
while read -r m; do
    insmod "/modules/$m.ko" || setup_failed "insmod $m"
done </modules/order

types=/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2
[ -d "$types" ] || setup_failed "no $types"
echo "guest: mtty-2 available_instances $(cat "$types/available_instances")"
echo "$SRC" >"$types/create" || setup_failed "create $SRC"
echo "$DST" >"$types/create" || setup_failed "create $DST"

group() { basename "$(readlink "/sys/bus/mdev/devices/$1/iommu_group")"; }
SRC_GROUP=$(group "$SRC")
DST_GROUP=$(group "$DST")
for g in "$SRC_GROUP" "$DST_GROUP"; do
    [ -c "/dev/vfio/$g" ] || setup_failed "no /dev/vfio/$g"
done
echo "guest: source $SRC group $SRC_GROUP, destination $DST group $DST_GROUP"

/kernel-vfio-check "$SRC" "$SRC_GROUP" "$DST" "$DST_GROUP"
rc=$?
echo "guest: kernel-vfio-check exit $rc"
if [ "$rc" != 0 ]; then
    dmesg | tail -n 30 | sed 's/^/  dmesg: /'
fi
# KERNEL_TEST_SHELL=1 on the host adds kt.shell=1: stay for a look around.
if grep -q 'kt.shell=1' /proc/cmdline; then
    echo "guest: shell (exit or Ctrl-D powers off; Ctrl-A X quits QEMU)"
    setsid cttyhack sh
fi
poweroff -f
