"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from loadtests.records import RequestRecord  # noqa: E402
from loadtests.summary import percentile  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def distribution_plot(values: list[float], title: str, xlabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if values:
        ax.hist(values, bins=min(50, max(5, len(values) // 3)), color="#4477aa")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            value = percentile(values, q)
            ax.axvline(value, color="#cc3311", linestyle=style, label=f"p{q} {value:.3f}")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no successful requests", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel, ylabel="requests")
    _save(fig, path)


def tokens_per_s_plot(records: list[RequestRecord], run_start: float, path: Path) -> None:
    points = [(r.start - run_start, r.decode_tokens_per_s, r.users) for r in records if r.decode_tokens_per_s]
    fig, ax = plt.subplots(figsize=(7, 4))
    if points:
        xs, ys, users = zip(*points)
        if len(set(users)) > 1:
            dots = ax.scatter(xs, ys, c=users, cmap="viridis", s=12)
            fig.colorbar(dots, ax=ax, label="concurrent users")
        else:
            ax.scatter(xs, ys, s=12, color="#4477aa", label=f"{users[0]} concurrent users")
            ax.legend()
    ax.set(title="Tokens/s per request (after the first token)", xlabel="request sent at (s)", ylabel="tokens/s")
    _save(fig, path)


def throughput_plot(stages: list[dict], knee: dict | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    users = [s["users"] for s in stages]
    throughput = [s["throughput_tok_s"] for s in stages]
    ax.plot(users, throughput, marker="o", color="#4477aa", label="throughput")
    if knee is not None:
        ax.scatter([knee["users"]], [knee["throughput_tok_s"]], s=150, facecolors="none",
                   edgecolors="#cc3311", linewidths=2, zorder=3, label=f"knee: {knee['users']} users")
    if len(users) > 1 and users[-1] / users[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(users, [str(u) for u in users])
    ax.set(title="Throughput vs concurrency", xlabel="concurrent users", ylabel="output tokens/s (all users)")
    ax.legend()
    _save(fig, path)


def write_plots(records: list[RequestRecord], summary: dict, run_start: float, out: Path) -> list[Path]:
    good = [r for r in records if r.ok]
    paths = [out / "ttft.png", out / "latency.png", out / "tokens_per_s.png", out / "throughput_vs_concurrency.png"]
    distribution_plot([r.ttft_s for r in good if r.ttft_s is not None], "Time to first token", "seconds", paths[0])
    distribution_plot([r.e2e_s for r in good], "End-to-end latency", "seconds", paths[1])
    tokens_per_s_plot(records, run_start, paths[2])
    throughput_plot(summary["stages"], summary["knee"], paths[3])
    return paths
