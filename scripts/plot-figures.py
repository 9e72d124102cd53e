#!/usr/bin/env python3
"""Draws the downtime figures of docs/figures from downtime-sweep's JSON (`make plots`).

    scripts/plot-figures.py RESULTS.json OUTDIR

Writes downtime-vs-load-cost.png, downtime-vs-devices.png and, once the engine has multifd
channels (the sweep lists them), downtime-vs-channels.png. Each figure carries the machine it
ran on and the published figure it is compared with (shared/reference/anchors.md, part A).
"""
import json
import textwrap
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def errors(summaries):
    """Median with min-max whiskers."""
    medians = [s["medianMs"] for s in summaries]
    low = [m - s["minMs"] for m, s in zip(medians, summaries)]
    high = [s["maxMs"] - m for m, s in zip(medians, summaries)]
    return medians, [low, high]


def footer(fig, results, anchor):
    text = "Ran on %s, %s; median of %d runs per point, whiskers min-max. %s" % (
        results["machine"], results["date"][:10], results["repeats"], anchor)
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(text, 125)), fontsize=7.5, va="bottom", ha="left", color="#444444")


def load_cost(results, outdir):
    section = results["loadCost"]
    points = section["points"]
    x = [p["loadMs"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    fig.subplots_adjust(bottom=0.24)
    for key, label, color, marker in (("ackOffQEMU", "switchover-ack off, QEMU's decision", "#c0392b", "o"),
                                      ("ackOff", "switchover-ack off, held for the destination's backlog", "#d68910", "^"),
                                      ("ackOn", "switchover-ack on", "#2471a3", "s")):
        if not all(key in p for p in points):
            continue  # results from before the sweep measured this line
        medians, yerr = errors([p[key] for p in points])
        ax.errorbar(x, medians, yerr=yerr, label=label, color=color, marker=marker, capsize=4, linewidth=2)
        for xi, m in zip(x, medians):
            ax.annotate("%.0f" % m, (xi, m), textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)
    on_medians = [p["ackOn"]["medianMs"] for p in points]
    ax.plot(x, [m + xi for m, xi in zip(on_medians, x)], linestyle=":", color="#888888",
            label="ack-on downtime + the load cost")
    ax.set_xlabel("destination load cost of the device's initial data (ms)")
    ax.set_ylabel("downtime (ms)")
    ax.set_xticks(x)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("Downtime vs destination load cost: switchover-ack off (QEMU's decision, ours) and on\n%s" % textwrap.fill(section["vm"], 95), fontsize=9)
    footer(fig, results, "Published (QEMU 8.1, one mlx5 VF, 300 MB of device data): 1900 ms off, 420 ms on (4.5x); "
                         "the 1480 ms difference is destination-side resource allocation.")
    path = os.path.join(outdir, "downtime-vs-load-cost.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def device_count(results, outdir):
    section = results["deviceCount"]
    points = section["points"]
    x = [p["devices"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    fig.subplots_adjust(bottom=0.24)
    lines = [("ackOn", "multifd off", "#c0392b", "o")]
    if all("ackOnMultifd" in p for p in points):
        lines.append(("ackOnMultifd", "multifd, %d channels" % points[0]["multifdChannels"], "#1e8449", "D"))
    for key, label, color, marker in lines:
        medians, yerr = errors([p[key] for p in points])
        ax.errorbar(x, medians, yerr=yerr, color=color, marker=marker, capsize=4, linewidth=2, label=label + " (switchover-ack on)")
        for xi, m in zip(x, medians):
            ax.annotate("%.0f" % m, (xi, m), textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)
    ax.set_xlabel("devices migrated")
    ax.set_ylabel("downtime (ms)")
    ax.set_xticks(x)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("Downtime vs device count\n%s" % textwrap.fill(section["vm"], 95), fontsize=9)
    footer(fig, results, "Published (QEMU 10.0, ConnectX-7 VFs, ~100 MiB each, 100 GbE, p25 of 70-100 runs): "
                         "multifd off 487 / 859 / 1900 ms, on 366 / 556 / 1095 ms for 1 / 2 / 4 VFs.")
    path = os.path.join(outdir, "downtime-vs-devices.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def channels(results, outdir):
    section = results["channels"]
    if not section.get("available") or not section.get("points"):
        print("plot-figures: no channel sweep in the results (the engine does not drive multifd channels yet); "
              "downtime-vs-channels.png not drawn")
        return None
    points = section["points"]
    x = [p["channels"] for p in points]
    medians, yerr = errors([p["ackOn"] for p in points])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    fig.subplots_adjust(bottom=0.24)
    ax.errorbar(x, medians, yerr=yerr, color="#1e8449", marker="D", capsize=4, linewidth=2, label="4 devices, switchover-ack on")
    for xi, m in zip(x, medians):
        ax.annotate("%.0f" % m, (xi, m), textcoords="offset points", xytext=(6, 4), fontsize=8, color="#1e8449")
    ax.set_xlabel("multifd channels")
    ax.set_ylabel("downtime (ms)")
    ax.set_xticks(x)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title("Downtime vs multifd channels (0 = off)\n%s" % textwrap.fill(section.get("vm", ""), 95), fontsize=9)
    footer(fig, results, "Published (QEMU 10.0, 4 ConnectX-7 VFs): 1900 ms multifd off; 1095 / 1104 / 1125 ms "
                         "with 6 / 8 / 15 channels (flat past ~6).")
    path = os.path.join(outdir, "downtime-vs-channels.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    os.makedirs(sys.argv[2], exist_ok=True)
    for draw in (load_cost, device_count, channels):
        path = draw(results, sys.argv[2])
        if path:
            print("plot-figures: wrote %s" % path)


if __name__ == "__main__":
    main()
