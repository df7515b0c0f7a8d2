"""PNG plots of a bench report: throughput vs concurrency, latency, autoscaling timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(report: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("served", "o-"), ("baseline", "s--")):
        rows = report[name]
        ax.plot([r["concurrency"] for r in rows], [r["images_per_s"] for r in rows], style, label=name)
    ax.axhline(
        report["raw"]["best_images_per_s"],
        color="grey",
        linestyle=":",
        label="raw pipeline (best batch)",
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images / s")
    ax.set_title("Throughput vs concurrency")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / f"{stem}-throughput.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("served", "o-"), ("baseline", "s--")):
        rows = report[name]
        ax.plot([r["concurrency"] for r in rows], [r["p50_s"] for r in rows], style, label=f"{name} p50")
        ax.plot(
            [r["concurrency"] for r in rows],
            [r["p99_s"] for r in rows],
            style,
            alpha=0.5,
            label=f"{name} p99",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (s)")
    ax.set_title("Latency vs concurrency")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / f"{stem}-latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("served", "-"), ("baseline", "--")):
        for row in report[name]:
            latencies = row.get("latencies_s") or []
            if latencies:
                share = [(i + 1) / len(latencies) for i in range(len(latencies))]
                ax.step(latencies, share, style, where="post", label=f"{name} c={row['concurrency']}")
    ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("share of requests")
    ax.set_title("Latency CDF")
    ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(folder / f"{stem}-latency-cdf.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    sim = report.get("autoscaling_sim")
    if sim and sim.get("timeline"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        t = [s["t"] for s in sim["timeline"]]
        ax.step(t, [s["replicas"] for s in sim["timeline"]], where="post", label="model replicas")
        ax.step(t, [s["gpu_nodes"] for s in sim["timeline"]], where="post", linestyle="--", label="GPU nodes")
        ax.set_xlabel("seconds")
        ax.set_yticks([0, 1, 2])
        ax.set_title("Simulated cluster: load step, then idle")
        ax.legend()
        fig.tight_layout()
        paths.append(folder / f"{stem}-autoscaling.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
