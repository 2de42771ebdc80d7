"""One backend held in its own process for a benchmark: load once, then run rounds on demand.

Each backend gets a fresh process, so its peak RSS is its own and no thread of one backend runs
beside the other. The parent alternates rounds between backends, so a slow spell on a shared
machine hits both rather than whichever happened to run then.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from engine.config import EngineConfig

_engine = None  # the backend of this worker process
_label = ""


def _progress(line: str) -> None:
    print(f"[{_label}] {line}", file=sys.stderr, flush=True)


def _load(label: str, backend: str, config: EngineConfig, warmup_prompts: list[list[int]]) -> float:
    """Create the backend and warm it up; returns the load time in seconds."""
    global _engine, _label
    from engine.backends import create_engine
    from engine.bench_timing import run_requests
    from engine.types import SamplingParams

    _label = label
    _progress("loading")
    started = time.perf_counter()
    _engine = create_engine(backend, config)
    load_s = time.perf_counter() - started
    _progress("warming up")
    run_requests(_engine, warmup_prompts, SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True), prefix="warmup")
    return load_s


def _round(number: int, decode_prompt: list[int], batch_prompts: list[list[int]], max_tokens: int) -> dict:
    """One decode measurement (a request alone) and one throughput measurement (all at once)."""
    from engine.bench_timing import mean, run_requests, throughput
    from engine.types import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    _progress(f"round {number}: decode, 1 request x {max_tokens} tokens")
    single = run_requests(_engine, [decode_prompt], params, prefix=f"decode{number}-")[0]
    _progress(f"round {number}: throughput, {len(batch_prompts)} requests x {max_tokens} tokens")
    batch = run_requests(_engine, batch_prompts, params, prefix=f"batch{number}-")
    return {
        "ttft_s": single.ttft,
        "decode_tok_s": single.decode_tokens_per_s,
        "batch_ttft_s": mean([t.ttft for t in batch]),
        "throughput_tok_s": throughput(batch),
        "output_tokens": sum(t.num_tokens for t in batch),
    }


def _close() -> float:
    """Stop the backend's threads; returns this process's peak RSS in MiB."""
    from engine.bench_timing import peak_rss_mib

    close = getattr(_engine, "close", None)
    if close is not None:
        close()
    return peak_rss_mib()


class BackendSession:
    """The parent's handle on one backend's process. Calls block until the process answers."""

    def __init__(self, label: str, backend: str, config: EngineConfig, warmup_prompts: list[list[int]]) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            self.load_s = self._pool.submit(_load, label, backend, config, warmup_prompts).result()
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise

    def run_round(self, number: int, decode_prompt: list[int], batch_prompts: list[list[int]], max_tokens: int) -> dict:
        return self._pool.submit(_round, number, decode_prompt, batch_prompts, max_tokens).result()

    def close(self) -> float:
        try:
            return self._pool.submit(_close).result()
        finally:
            self._pool.shutdown()
