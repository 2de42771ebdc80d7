"""Runs Locust as a library in its own process (`python -m loadtests.driver CONFIG.json`):
importing locust monkey-patches the process with gevent, so nothing else lives here.
Writes Locust's CSV and HTML, the raw records and the run's timing into the config's `out`."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import gevent
from locust import LoadTestShape
from locust.env import Environment
from locust.html import get_html_report
from locust.runners import STATE_STOPPED
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV, StatsCSVFileWriter, stats_history

from loadtests.config import RunConfig
from loadtests.prompts import token_counter
from loadtests.records import write_records
from loadtests.run_files import CSV_PREFIX, HTML_FILE, RECORDS_FILE, RunInfo
from loadtests.shapes import LoadShape
from loadtests.users import ChatUser

MAX_SPAWN_RATE = 100.0  # users started per second when a stage grows
BUSY_GENERATOR = 0.8  # of one core: above it, the run's notes warn that the timings may be late


class ScheduledShape(LoadTestShape):
    def __init__(self, schedule: LoadShape):
        super().__init__()
        self.schedule = schedule

    def tick(self):
        users = self.schedule.users_at(self.get_run_time())
        return None if users is None else (users, min(float(users), MAX_SPAWN_RATE))


def configure_users(config: RunConfig) -> None:
    ChatUser.model = config.model
    ChatUser.api_key = config.api_key
    ChatUser.prompt_config = config.prompt
    ChatUser.counter = token_counter(config.tokenizer)
    ChatUser.ignore_eos = config.ignore_eos
    ChatUser.temperature = config.temperature
    ChatUser.request_timeout_s = config.request_timeout_s
    ChatUser.records = []
    ChatUser.notes = []


def progress_line(elapsed_s: float, users: int, done: int, failed: int, tok_s: float) -> str:
    return f"[loadtest] {elapsed_s:6.0f}s  users {users:4d}  requests {done:6d}  failures {failed:4d}  {tok_s:8.1f} tok/s"


def run(config: RunConfig) -> RunInfo:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    configure_users(config)
    schedule = config.load_shape()
    env = Environment(
        user_classes=[ChatUser], shape_class=ScheduledShape(schedule), host=config.url,
        stop_timeout=config.drain_s, locustfile="loadtests/users.py",
    )
    runner = env.create_local_runner()
    csv_writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(out / CSV_PREFIX), full_history=True)
    background = [gevent.spawn(csv_writer.stats_writer), gevent.spawn(stats_history, runner)]

    runner.start_shape()
    run_start, cpu_start = time.time(), time.process_time()
    last_chunks, last_at = 0, time.monotonic()
    while runner.state != STATE_STOPPED or runner.shape_greenlet is not None:
        gevent.sleep(1.0)
        now = time.monotonic()
        chunks = ChatUser.chunks_received
        failed = sum(not r.ok for r in ChatUser.records)
        print(progress_line(time.time() - run_start, runner.user_count, len(ChatUser.records), failed,
                            (chunks - last_chunks) / (now - last_at)), file=sys.stderr, flush=True)
        last_chunks, last_at = chunks, now
    run_end = time.time()
    generator_cpu = (time.process_time() - cpu_start) / max(run_end - run_start, 1e-9)
    runner.quit()

    gevent.killall(background)
    csv_writer.close_files()
    write_final_csv(env, out)
    (out / HTML_FILE).write_text(get_html_report(env, show_download_link=False), encoding="utf-8")
    write_records(out / RECORDS_FILE, ChatUser.records)
    print(f"[loadtest] load generator CPU: {generator_cpu:.0%} of one core", file=sys.stderr, flush=True)
    notes = list(ChatUser.notes)
    if generator_cpu > BUSY_GENERATOR:
        notes.append(f"the load generator was busy {generator_cpu:.0%} of one core: its TTFT/ITL may include its own delays")
    info = RunInfo(url=config.url, model=config.model, run_start=run_start, run_end=run_end,
                   ignore_eos=ChatUser.ignore_eos, notes=notes, generator_cpu=generator_cpu)
    info.write(out)
    return info


def write_final_csv(env: Environment, out: Path) -> None:
    """The writer greenlet rewrites these every second; write them once more, complete."""
    final = StatsCSV(env, PERCENTILES_TO_REPORT)
    for suffix, write in (("stats", final.requests_csv), ("failures", final.failures_csv),
                          ("exceptions", final.exceptions_csv)):
        with open(out / f"{CSV_PREFIX}_{suffix}.csv", "w", newline="") as handle:
            write(csv.writer(handle))


if __name__ == "__main__":
    run(RunConfig.from_json(Path(sys.argv[1]).read_text(encoding="utf-8")))
