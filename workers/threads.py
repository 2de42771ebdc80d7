"""Starts every thread of Celery's threads pool before the first job arrives.

The pool (a ThreadPoolExecutor) starts a thread per submitted task until it holds its limit, and
starting one waits for the new thread to run: under a burst of jobs, while the consumer thread,
the engine thread and the new threads all want the interpreter lock, each start cost the consumer
milliseconds, and the burst's later jobs reached the engine one or more engine steps late.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def start_all_threads(executor: ThreadPoolExecutor, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Runs `count` tasks that wait for each other (and for the caller), so the executor starts
    `count` threads now; returns once they are all idle again, or after timeout_s."""
    if count < 1:
        return
    everyone = threading.Barrier(count + 1)

    def wait_for_everyone() -> None:
        try:
            everyone.wait(timeout_s)
        except threading.BrokenBarrierError:
            pass

    for _ in range(count):
        executor.submit(wait_for_everyone)
    try:
        everyone.wait(timeout_s)
    except threading.BrokenBarrierError:
        log.warning("started fewer pool threads than %d within %.0f s", count, timeout_s)
