"""A short headless load against a real local CPU stack (`llmq up`: Redis, a worker with the
default model, the gateway), through the real `llmq loadtest run` command."""

import csv
import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from loadtests.records import read_records
from loadtests.run_files import CSV_PREFIX, HTML_FILE, PLOTS, RECORDS_FILE, SUMMARY_FILE
from loadtests.stack import LocalStack
from loadtests.target import server_root

pytestmark = pytest.mark.integration


def completion_tokens_counted(url: str) -> float:
    """The gateway's own count of generated tokens (Prometheus), all models summed."""
    text = httpx.get(server_root(url) + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^llmq_gateway_completion_tokens_total\{[^}]*\} (\S+)$", text, re.M))


def poll(condition, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_headless_sweep_against_a_local_stack(model_dir, tmp_path):
    out = tmp_path / "report"
    with LocalStack(("--model", str(model_dir)), tmp_path, ready_timeout_s=240) as stack:
        tokens_before = completion_tokens_counted(stack.url)
        run = subprocess.run(
            [sys.executable, "-m", "llmq", "loadtest", "run", "--url", stack.url, "--out", str(out),
             "--shape", "sweep", "--users", "2", "--stage-duration", "10",
             "--prompt-tokens", "24:48", "--output-tokens", "12", "--system-prompts", "1", "--system-tokens", "64"],
            capture_output=True, text=True, timeout=240,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads((out / SUMMARY_FILE).read_text())
        # The server's own token count catches up with the client's (it counts at the terminal event).
        served = poll(lambda: completion_tokens_counted(stack.url) - tokens_before == summary["completion_tokens"], 10)
        assert served, (completion_tokens_counted(stack.url) - tokens_before, summary["completion_tokens"])

    for name in (SUMMARY_FILE, RECORDS_FILE, HTML_FILE, *PLOTS, f"{CSV_PREFIX}_stats.csv",
                 f"{CSV_PREFIX}_stats_history.csv", f"{CSV_PREFIX}_failures.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "[loadtest]" in run.stderr and "tok/s" in run.stderr  # the progress line
    assert "load generator CPU" in run.stderr and summary["generator_cpu"] > 0

    records = read_records(out / RECORDS_FILE)
    assert records and summary["requests"] == len(records) and summary["failed"] == 0 and summary["errors"] == {}
    assert all(r.ok for r in records), [r.error for r in records if not r.ok][:3]
    assert summary["completion_tokens"] == sum(r.completion_tokens for r in records)
    for r in records:
        assert not r.empty_text and 0 < r.ttft_s < r.e2e_s
        assert 1 <= r.completion_tokens <= r.max_tokens == 12
        assert r.finish_reason in ("length", "stop") and r.prompt_tokens > 64
        assert len(r.itl_s) == r.content_chunks - 1
    assert [s["users"] for s in summary["stages"]] == [1, 2]
    assert sum(s["requests"] for s in summary["stages"]) == len(records)

    # Locust's own accounting agrees with the raw records.
    rows = {row["Name"]: row for row in csv.DictReader(open(out / f"{CSV_PREFIX}_stats.csv"))}
    assert int(rows["e2e"]["Request Count"]) == len(records) and int(rows["e2e"]["Failure Count"]) == 0
    assert int(rows["ttft"]["Request Count"]) == len(records)
    locust_tokens = float(rows["e2e"]["Average Content Size"]) * len(records)
    assert locust_tokens == pytest.approx(summary["completion_tokens"])
