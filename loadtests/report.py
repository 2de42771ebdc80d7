"""Turns a finished run's folder (raw records + run.json) into summary.json and plots."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.config import RunConfig
from loadtests.plots import write_plots
from loadtests.records import RequestRecord, read_records
from loadtests.run_files import CONFIG_FILE, RECORDS_FILE, SUMMARY_FILE, RunInfo
from loadtests.summary import summarize


def write_report(out: Path) -> dict:
    config = RunConfig.from_json((out / CONFIG_FILE).read_text(encoding="utf-8"))
    info = RunInfo.read(out)
    records = read_records(out / RECORDS_FILE)
    notes = list(info.notes) + ignore_eos_notes(records)
    summary = summarize(records, config.load_shape(), info.run_start, info.run_end, notes, config.warmup_s)
    summary = {"url": info.url, "model": info.model, **summary, "generator_cpu": info.generator_cpu}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    measured = [r for r in records if r.start >= info.run_start + config.warmup_s]
    write_plots(measured, summary, info.run_start, out)
    return summary


def ignore_eos_notes(records: list[RequestRecord]) -> list[str]:
    asked = [r for r in records if r.ok and r.ignore_eos]
    if not asked:
        return []
    short = [r for r in asked if r.completion_tokens < r.max_tokens]
    if not short:
        return [f"ignore_eos honoured: all {len(asked)} requests that asked for it ran to max_tokens"]
    return [f"{len(short)} of {len(asked)} requests ended before max_tokens despite ignore_eos"
            " (the server may not support the field)"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_text(summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [
        f"requests {summary['requests']}  succeeded {summary['succeeded']}  failed {summary['failed']}"
        f"  completion tokens {summary['completion_tokens']}  throughput {_fmt(summary['throughput_tok_s'], 1)} tok/s",
        f"per request: {_fmt(summary['tokens_per_s_per_request']['mean'], 1)} tok/s mean,"
        f" {_fmt(summary['tokens_per_s_per_request']['p50'], 1)} p50;"
        f" latency {_fmt(summary['latency_s']['mean'])} s mean",
        f"TTFT p50/p90/p99 {_fmt(summary['ttft_s']['p50'])} / {_fmt(summary['ttft_s']['p90'])}"
        f" / {_fmt(summary['ttft_s']['p99'])} s;  ITL p50/p99 {_fmt(summary['itl_s']['p50'])}"
        f" / {_fmt(summary['itl_s']['p99'])} s",
    ]
    if len(summary["stages"]) > 1:
        for stage in summary["stages"]:
            lines.append(
                f"  {stage['users']:4d} users: {_fmt(stage['throughput_tok_s'], 1):>8} tok/s,"
                f" {_fmt(stage['tokens_per_s_per_request']['mean'], 1):>6} tok/s/request,"
                f" TTFT p50 {_fmt(stage['ttft_s']['p50'])} s"
            )
        knee = summary["knee"]
        lines.append(f"knee: {knee['users']} users" if knee else "knee: not reached (throughput still scaling)")
    if summary["warmup"]["requests"]:
        lines.append(f"warm-up: {summary['warmup']['requests']} requests of the first"
                     f" {summary['warmup']['seconds']:.0f} s left out")
    for error, count in summary["errors"].items():
        lines.append(f"error x{count}: {error}")
    lines.extend(f"note: {note}" for note in summary["notes"])
    return "\n".join(lines)
