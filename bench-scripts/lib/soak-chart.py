#!/usr/bin/env python3
"""Chart of a soak run (tests/soak.rs): the server's RSS and live heap, open fds and the
p50/p99 latency of each sample window over time, from <dir>/samples.csv,
written to <dir>/soak.png. Usage: soak-chart.py DIR"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "samples.csv")) as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t_s"]) for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(t, [int(r["rss_kib"]) / 1024 for r in rows], color="tab:blue", label="RSS")
    if rows and "heap_kib" in rows[0]:
        axes[0].plot(t, [int(r["heap_kib"]) / 1024 for r in rows], color="tab:purple", label="live heap")
        axes[0].legend()
    axes[0].set_ylabel("memory (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [int(r["fds"]) for r in rows], color="tab:green")
    axes[1].set_ylabel("open fds")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(t, [float(r["p99_ms"]) for r in rows], label="p99", color="tab:red")
    axes[2].plot(t, [float(r["p50_ms"]) for r in rows], label="p50", color="tab:orange")
    axes[2].set_ylabel("latency per window (ms)")
    axes[2].set_ylim(bottom=0)
    axes[2].legend()
    axes[2].set_xlabel("seconds since the load started")
    for ax in axes:
        ax.grid(alpha=0.3)
        for third in (t[-1] / 3, 2 * t[-1] / 3):
            ax.axvline(third, color="grey", linestyle=":", linewidth=0.8)
    fig.suptitle("ociregistry soak: 500 keep-alive + 200 slow connections, cold and warm pulls, upstream faults")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "soak.png"), dpi=110)


if __name__ == "__main__":
    main()
