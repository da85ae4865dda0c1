#!/usr/bin/python3
"""Plots of bench-edge-vs-cloud's JSON for docs/evaluation.md (Debian's
python3-matplotlib; /usr/bin/python3 on purpose).

    tests/bench/plot_edge_vs_cloud.py build/tests/bench/bench-edge-vs-cloud.json docs/evaluation
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"edge": "#2a7ab0", "cloud": "#c8553d"}


def bars(ax, data, key, title, unit, scale=1.0):
    names = [p["name"] for p in data["profiles"]]
    width = 0.38
    for i, placement in enumerate(("edge", "cloud")):
        values = [p.get(placement, {}).get(key, -1) for p in data["profiles"]]
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ys = [v * scale if v is not None and v >= 0 else 0 for v in values]
        rects = ax.bar(xs, ys, width, label=placement, color=COLOURS[placement])
        for r, v in zip(rects, values):
            x = None if v is None or v < 0 else v * scale
            label = "n/a" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.3g}")
            ax.annotate(label, (r.get_x() + r.get_width() / 2, r.get_height()), ha="center",
                        va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{p['name']}\n{p['rtt_ms']:g} ms RTT\n{p['rate_mbit']:g} Mbit/s, {p['loss_pct']:g} % loss"
                        for p in data["profiles"]], fontsize=8)
    top = max([r.get_height() for r in ax.patches] + [1])
    ax.set_ylim(0, top * 1.25)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


def main():
    data = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bars(ax, data, "first_processed_image_ms", "Time to first processed image (experiment 1)", "ms")
    fig.tight_layout()
    fig.savefig(f"{out}/first-processed-image.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bars(axes[0], data, "g2g_p50_ms", "Glass to glass, p50", "ms")
    bars(axes[1], data, "g2g_p95_ms", "Glass to glass, p95", "ms")
    fig.tight_layout()
    fig.savefig(f"{out}/glass-to-glass.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bars(axes[0], data, "wan_bytes_per_min_per_viewer", "WAN bytes per minute per viewer", "MB/min", 1e-6)
    axes[0].set_yscale("log")
    axes[0].set_ylim(1, 1000)
    bars(axes[1], data, "control_to_photon_p95_ms", "Control to photon, p95", "ms")
    fig.tight_layout()
    fig.savefig(f"{out}/wan-bytes-and-control.png", dpi=110)


if __name__ == "__main__":
    main()
