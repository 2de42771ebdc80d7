"""What a run leaves in its report folder, and the run's own facts (run.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
RECORDS_FILE = "requests.jsonl"
SUMMARY_FILE = "summary.json"
HTML_FILE = "locust_report.html"
CSV_PREFIX = "locust"  # locust_stats.csv, locust_stats_history.csv, locust_failures.csv, ...
PLOTS = ("ttft.png", "latency.png", "tokens_per_s.png", "throughput_vs_concurrency.png")


@dataclass
class RunInfo:
    url: str
    model: str
    run_start: float  # unix seconds: the load shape began
    run_end: float  # unix seconds: the last user stopped
    ignore_eos: bool  # still on at the end (False if the server refused it)
    notes: list[str] = field(default_factory=list)
    # CPU time of the load generator over the run, in cores: near 1 it is the bottleneck,
    # and the timings it takes (TTFT, ITL) include its own delays.
    generator_cpu: float | None = None

    def write(self, out: Path) -> None:
        (out / RUN_FILE).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, out: Path) -> "RunInfo":
        return cls(**json.loads((out / RUN_FILE).read_text(encoding="utf-8")))
