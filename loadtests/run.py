"""One headless load test: settle the model and tokenizer, run Locust in a child process
(loadtests/driver.py), then write summary.json and the plots."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from llmq.paths import resolve_model
from loadtests.config import RunConfig
from loadtests.report import summary_text, write_report
from loadtests.run_files import CONFIG_FILE
from loadtests.target import served_model


def settle(config: RunConfig) -> RunConfig:
    """Fill in what the server can tell: the model name, and a local tokenizer of that name."""
    model = config.model or served_model(config.url, config.api_key)
    tokenizer = config.tokenizer
    if tokenizer is None and (resolve_model(model) / "tokenizer.json").is_file():
        tokenizer = str(resolve_model(model))
    return replace(config, model=model, tokenizer=tokenizer)


def run_load(config: RunConfig) -> dict:
    config = settle(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
    shape = config.load_shape()
    print(
        f"[loadtest] {config.url} model {config.model}: {shape.kind} load,"
        f" up to {shape.max_users} users for {shape.duration_s:.0f} s -> {out}",
        file=sys.stderr, flush=True,
    )
    driver = subprocess.run([sys.executable, "-m", "loadtests.driver", str(out / CONFIG_FILE)])
    if driver.returncode != 0:
        raise RuntimeError(f"the Locust driver exited with code {driver.returncode}")
    summary = write_report(out)
    print(summary_text(summary), file=sys.stderr, flush=True)
    return summary
