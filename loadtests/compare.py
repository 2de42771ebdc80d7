"""The same load against a local gateway with each engine backend in turn, and the seed's
table: per-request tokens/s, average latency and TTFT per backend, with ratios, beside the
numbers of the case we follow (native Hugging Face -> TensorRT-LLM)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from loadtests.config import RunConfig
from loadtests.run import run_load
from loadtests.stack import LocalStack


@dataclass(frozen=True)
class Metric:
    key: str  # summary path, "a.b"
    label: str
    unit: str
    higher_is_better: bool
    seed_base: float  # native Hugging Face
    seed_new: float  # TensorRT-LLM
    seed_quoted_ratio: float | None = None  # as the case study states it, when it differs

    def value(self, summary: dict) -> float | None:
        node = summary
        for part in self.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def ratio(self, base: float | None, new: float | None) -> float | None:
        """How many times better `new` is than `base` (>1 is an improvement)."""
        if not base or not new:
            return None
        return new / base if self.higher_is_better else base / new


METRICS = (
    Metric("tokens_per_s_per_request.mean", "tokens/s per request", "tok/s", True, 19.0, 44.0),
    Metric("latency_s.mean", "average latency", "s", False, 3.4, 1.5, seed_quoted_ratio=2.35),
    Metric("ttft_s.mean", "time to first token", "s", False, 0.8, 0.3, seed_quoted_ratio=2.7),
)


def compare_rows(summaries: dict[str, dict]) -> list[dict]:
    """One row per metric: each backend's value, the ratio of the last backend to the
    first, and the seed's values and ratio (recomputed and, where it differs, as quoted)."""
    backends = list(summaries)
    rows = []
    for metric in METRICS:
        values = {b: metric.value(summaries[b]) for b in backends}
        rows.append({
            "metric": metric.label,
            "unit": metric.unit,
            "values": values,
            "ratio": metric.ratio(values[backends[0]], values[backends[-1]]) if len(backends) > 1 else None,
            "seed": {"hf": metric.seed_base, "trtllm": metric.seed_new,
                     "ratio": metric.ratio(metric.seed_base, metric.seed_new),
                     "quoted_ratio": metric.seed_quoted_ratio},
        })
    return rows


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    backends = list(rows[0]["values"])
    ours = f"{backends[-1]} vs {backends[0]}" if len(backends) > 1 else "ratio"
    header = ["metric", *backends, ours, "seed hf", "seed trtllm", "seed ratio"]
    lines = [header]
    for row in rows:
        seed = row["seed"]
        seed_ratio = f"{seed['ratio']:.2f}x"
        if seed["quoted_ratio"] is not None:
            seed_ratio += f" (quoted {seed['quoted_ratio']:.2f}x)"
        lines.append([
            f"{row['metric']} ({row['unit']})",
            *(_cell(row["values"][b]) for b in backends),
            "-" if row["ratio"] is None else f"{row['ratio']:.2f}x",
            _cell(seed["hf"], 1), _cell(seed["trtllm"], 1), seed_ratio,
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


COMPARE_FILE = "compare.json"
TABLE_FILE = "compare.txt"


def write_compare(out: Path, backends: list[str], summaries: dict[str, dict]) -> dict:
    """compare.json and the table as they stand: backends not yet run are "pending", so a run
    cut short still leaves the numbers of those that finished."""
    status = {b: ("failed" if "error" in summaries[b] else "done") if b in summaries else "pending" for b in backends}
    known = {b: summaries.get(b, {}) for b in backends}
    rows = compare_rows(known)
    result = {"backends": backends, "status": status, "rows": rows, "summaries": summaries}
    (out / COMPARE_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / TABLE_FILE).write_text(format_table(rows) + "\n", encoding="utf-8")
    return result


def _failure(exc: BaseException, stack: LocalStack) -> str:
    reason = f"{type(exc).__name__}: {exc}"
    tail = stack.log_tail(5)
    return f"{reason}\n{tail}" if tail and tail not in reason else reason


def run_compare(config: RunConfig, backends: list[str], up_args: tuple[str, ...], ready_timeout_s: float) -> dict:
    """Each backend: a fresh `llmq up --backend X` stack, the same load, its own report folder.
    compare.json is rewritten after each backend."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict] = {}
    result = write_compare(out, backends, summaries)
    for backend in backends:
        backend_out = out / backend
        backend_out.mkdir(parents=True, exist_ok=True)
        stack = LocalStack((*up_args, "--backend", backend), backend_out, ready_timeout_s)
        try:
            with stack:
                summaries[backend] = run_load(config.with_out(backend_out, url=stack.url))
        except (RuntimeError, TimeoutError, OSError) as exc:
            # One backend that does not start (or breaks) leaves the others' numbers standing;
            # its stack is stopped, every process of it, before the next one starts.
            print(f"[loadtest] {backend}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            summaries[backend] = {"error": _failure(exc, stack)}
        result = write_compare(out, backends, summaries)
    return result
