#!/usr/bin/env bash
# devprobe beside `lspci -nnk` on one generated sysfs tree of 1,024 devices, in one run.
#
#   scripts/bench-devprobe.sh [--rounds N] [--devices N] [--keep DIR]
#   scripts/bench-devprobe.sh --generate DIR [--devices N]    # only write the tree
#
# Prints both mean times and the ratio devprobe/lspci (goal: at most 1.5). Uses hyperfine when
# installed (apt-get install hyperfine), a shell loop otherwise. Needs python3 (tree generator),
# pciutils (lspci) and a release build of devprobe (built here).
set -euo pipefail

rounds=20
devices=1024
keep=""
generate_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --generate) generate_only="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

if command -v hyperfine >/dev/null; then
  csv=$(mktemp)
  hyperfine --style basic --warmup 3 --runs "$rounds" --export-csv "$csv" \
    -n devprobe "$dp_cmd" -n "lspci -nnk" "$ls_cmd" >&2
  dp=$(awk -F, '$1=="devprobe"{print $2}' "$csv")
  ls=$(awk -F, '$1=="lspci -nnk"{print $2}' "$csv")
  dp_med=$(awk -F, '$1=="devprobe"{print $4}' "$csv")
  ls_med=$(awk -F, '$1=="lspci -nnk"{print $4}' "$csv")
  # CPU time (user + system) is what the two tools cost; wall time also counts waiting on a busy host.
  dp_cpu=$(awk -F, '$1=="devprobe"{print $5 + $6}' "$csv")
  ls_cpu=$(awk -F, '$1=="lspci -nnk"{print $5 + $6}' "$csv")
  rm -f "$csv"
  method="hyperfine, $rounds runs after 3 warm-ups"
else
  time_it() {
    local start end
    for _ in 1 2 3; do "$@" >/dev/null 2>&1; done
    start=$(date +%s%N)
    for _ in $(seq "$rounds"); do "$@" >/dev/null 2>&1; done
    end=$(date +%s%N)
    awk -v ns=$((end - start)) -v n="$rounds" 'BEGIN{printf "%.6f", ns / n / 1e9}'
  }
  # shellcheck disable=SC2086
  dp=$(time_it $dp_cmd)
  # shellcheck disable=SC2086
  ls=$(time_it $ls_cmd)
  dp_med=$dp; ls_med=$ls; dp_cpu=""; ls_cpu=""
  method="shell loop, $rounds runs after 3 warm-ups (mean only)"
fi

awk -v dp="$dp" -v ls="$ls" -v dpm="$dp_med" -v lsm="$ls_med" -v dpc="$dp_cpu" -v lsc="$ls_cpu" \
    -v n="$devices" -v m="$method" 'BEGIN {
  printf "devprobe vs lspci -nnk on %d devices (%s)\n", n, m
  printf "  devprobe    mean %7.1f ms   median %7.1f ms", dp * 1000, dpm * 1000
  if (dpc != "") printf "   cpu %7.1f ms", dpc * 1000
  printf "\n  lspci -nnk  mean %7.1f ms   median %7.1f ms", ls * 1000, lsm * 1000
  if (lsc != "") printf "   cpu %7.1f ms", lsc * 1000
  printf "\n  ratio devprobe/lspci: %.2f (mean), %.2f (median)", dp / ls, dpm / lsm
  if (lsc != "") printf ", %.2f (cpu)", dpc / lsc
  printf "; goal <= 1.50 (median): %s\n", (dpm / lsm <= 1.5 ? "met" : "NOT met")
}'
