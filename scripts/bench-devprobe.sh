#!/usr/bin/env bash
# devprobe (text and --json) beside `lspci -nnk` on one generated sysfs tree of 1,024 devices, in
# one run.
#
#   scripts/bench-devprobe.sh [--rounds N] [--devices N] [--keep DIR]
#   scripts/bench-devprobe.sh --generate DIR [--devices N]    # only write the tree
#
# Each round runs the three commands once, in a rotating order, so load from other processes
# falls on all of them alike. Prints the median wall and CPU (user + system) time of each, and
# the ratios devprobe/lspci (goal: at most 1.0 in CPU time; wall time also counts waiting for a
# core on a busy machine). Needs python3 (tree generator, timing), pciutils
# (lspci) and a release build of devprobe (built here).
set -euo pipefail

rounds=21
devices=1024
keep=""
generate_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --generate) generate_only="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-devprobe: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Writes a tree laid out like /sys under $1 with $2 devices: ConnectX-7 PFs with VFs on
# mlx5_vfio_pci / vfio-pci / unbound, Intel E810 PFs with VFs, virtio-net, NVMe, hisi and pds VFs.
# Every device has the attributes the kernel writes, a 256-byte config space, an IOMMU group.
generate() {
  python3 - "$1" "$2" <<'PY'
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
sysdir = os.path.join(root, "sys")
os.makedirs(os.path.join(sysdir, "bus/pci/devices"), exist_ok=True)
os.makedirs(os.path.join(sysdir, "kernel/iommu_groups"), exist_ok=True)

# (vendor, device, class, subsystem vendor, subsystem device, numa) per kind
KINDS = {
    "cx7-pf":  (0x15b3, 0x1021, 0x020000, 0x15b3, 0x0041),
    "cx7-vf":  (0x15b3, 0x101e, 0x020000, 0x15b3, 0x0041),
    "e810-pf": (0x8086, 0x1593, 0x020000, 0x8086, 0x0002),
    "e810-vf": (0x8086, 0x1889, 0x020000, 0x8086, 0x0000),
    "virtio":  (0x1af4, 0x1041, 0x020000, 0x1af4, 0x1100),
    "nvme":    (0x144d, 0xa80a, 0x010802, 0x144d, 0xa801),
    "hisi-vf": (0x19e5, 0xa256, 0x108000, 0x19e5, 0x0000),
    "pds-vf":  (0x1dd8, 0x1003, 0x020000, 0x1dd8, 0x4000),
}

def plan(n):
    """Yields (kind, driver, pf_index or None) for n devices."""
    out = []
    def family(pf_kind, pf_driver, vf_kind, vf_drivers, vfs):
        pf = len(out)
        out.append((pf_kind, pf_driver, None, vfs))
        for i in range(vfs):
            out.append((vf_kind, vf_drivers[i % len(vf_drivers)], pf, 0))
    while len(out) < n * 512 // 1024:
        family("cx7-pf", "mlx5_core", "cx7-vf", ["mlx5_vfio_pci", "mlx5_vfio_pci", "vfio-pci", None], 15)
    while len(out) < n * 768 // 1024:
        family("e810-pf", "ice", "e810-vf", ["iavf", "vfio-pci"], 15)
    for kind, driver, share in (("virtio", "virtio-pci", 896), ("nvme", "nvme", 960),
                                ("hisi-vf", "hisi_acc_vfio_pci", 992), ("pds-vf", "pds_vfio_pci", 1024)):
        while len(out) < n * share // 1024:
            out.append((kind, driver, None, 0))
    return out[:n]

def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)

devices = plan(count)
addresses = ["0000:%02x:%02x.%d" % (0x10 + i // 64, (i % 64) // 8, i % 8) for i in range(len(devices))]
for i, (kind, driver, pf, vfs) in enumerate(devices):
    bdf = addresses[i]
    vendor, device, cls, sv, sd = KINDS[kind]
    rel = "devices/pci0000:%s/%s" % (bdf[5:7], bdf)
    d = os.path.join(sysdir, rel)
    os.makedirs(d)
    for name, value in (("vendor", "0x%04x" % vendor), ("device", "0x%04x" % device),
                        ("class", "0x%06x" % cls), ("subsystem_vendor", "0x%04x" % sv),
                        ("subsystem_device", "0x%04x" % sd), ("revision", "0x00"),
                        ("numa_node", str(i * 2 // len(devices))), ("irq", "0"),
                        ("driver_override", driver if driver and "vfio" in driver else "(null)"),
                        ("modalias", "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X" % (
                            vendor, device, sv, sd, cls >> 16, (cls >> 8) & 0xff, cls & 0xff))):
        write(os.path.join(d, name), value + "\n")
    config = bytearray(b"\0" * 256)
    config[0:4] = bytes([vendor & 0xff, vendor >> 8, device & 0xff, device >> 8])
    config[9:12] = bytes([cls & 0xff, (cls >> 8) & 0xff, cls >> 16])
    config[0x2c:0x30] = bytes([sv & 0xff, sv >> 8, sd & 0xff, sd >> 8])
    write(os.path.join(d, "config"), bytes(config), "wb")
    os.symlink("../../../" + rel, os.path.join(sysdir, "bus/pci/devices", bdf))
    if driver:
        os.makedirs(os.path.join(sysdir, "bus/pci/drivers", driver), exist_ok=True)
        os.symlink("../../../bus/pci/drivers/" + driver, os.path.join(d, "driver"))
    os.makedirs(os.path.join(sysdir, "kernel/iommu_groups/%d/devices" % (i + 16)))
    os.symlink("../../../kernel/iommu_groups/%d" % (i + 16), os.path.join(d, "iommu_group"))
    if driver and "vfio" in driver:
        os.makedirs(os.path.join(d, "vfio-dev/vfio%d" % i))
    if pf is not None:
        os.symlink("../" + addresses[pf], os.path.join(d, "physfn"))
    if vfs:
        write(os.path.join(d, "sriov_totalvfs"), "%d\n" % vfs)
        write(os.path.join(d, "sriov_numvfs"), "%d\n" % vfs)
        for v in range(vfs):
            os.symlink("../" + addresses[i + 1 + v], os.path.join(d, "virtfn%d" % v))
print("generated %d devices under %s/sys" % (len(devices), root))
PY
}

if [ -n "$generate_only" ]; then
  generate "$generate_only" "$devices"
  exit 0
fi

here=$(cd "$(dirname "$0")/.." && pwd)
command -v lspci >/dev/null || { echo "bench-devprobe: lspci not found (apt-get install pciutils)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-devprobe: python3 not found" >&2; exit 1; }

echo "== building devprobe (release)"
(cd "$here" && swift build -c release --product devprobe 2>&1 | tail -1)
devprobe="$here/.build/release/devprobe"

tree=${keep:-$(mktemp -d /tmp/devprobe-bench.XXXXXX)}
[ -n "$keep" ] && rm -rf "$tree" && mkdir -p "$tree"
[ -z "$keep" ] && trap 'rm -rf "$tree"' EXIT
generate "$tree" "$devices"

dp_cmd="$devprobe --sysfs-root $tree/sys"
ls_cmd="lspci -nnk -A linux-sysfs -O sysfs.path=$tree/sys/bus/pci"

# Same tree, same devices: both must list all of them before any timing counts.
dp_count=$($dp_cmd --table | grep -c '^0000:' || true)
ls_count=$($ls_cmd 2>/dev/null | grep -c '^[0-9a-f]\{2\}:' || true)
echo "== devices listed: devprobe $dp_count, lspci $ls_count"
if [ "$dp_count" != "$devices" ] || [ "$ls_count" != "$devices" ]; then
  echo "bench-devprobe: expected $devices devices from both" >&2
  exit 1
fi

# Interleaved rounds: wall time from a monotonic clock, CPU time from the children's rusage.
python3 - "$rounds" "$devices" "$dp_cmd" "$ls_cmd" <<'PY'
import resource, shlex, statistics, subprocess, sys, time
rounds, devices = int(sys.argv[1]), int(sys.argv[2])
commands = [("devprobe", shlex.split(sys.argv[3])), ("devprobe --json", shlex.split(sys.argv[3]) + ["--json"]),
            ("lspci -nnk", shlex.split(sys.argv[4]))]
wall = {name: [] for name, _ in commands}
cpu = {name: [] for name, _ in commands}
def run(argv):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
for _ in range(3):
    for _, argv in commands:
        run(argv)
for r in range(rounds):
    for name, argv in commands[r % 3:] + commands[:r % 3]:
        w, c = run(argv)
        wall[name].append(w)
        cpu[name].append(c)
med = lambda xs: statistics.median(xs) * 1000
print("devprobe vs lspci -nnk on %d devices (%d interleaved rounds after 3 warm-ups; medians)" % (devices, rounds))
for name, _ in commands:
    print("  %-16s wall %7.1f ms   cpu %7.1f ms" % (name, med(wall[name]), med(cpu[name])))
# CPU time (user + system) is what the tools cost; wall time also counts waiting for a core,
# which on a shared machine swings from run to run. The goal is judged on CPU time.
met = True
for name in ("devprobe", "devprobe --json"):
    rw = med(wall[name]) / med(wall["lspci -nnk"])
    rc = med(cpu[name]) / med(cpu["lspci -nnk"])
    met = met and rc <= 1.0
    print("  ratio %s/lspci: %.2f (cpu), %.2f (wall)" % (name, rc, rw))
print("  goal <= 1.00 (cpu, text and --json): %s" % ("met" if met else "NOT met"))
PY
