"""Timing helpers of the engine benchmarks, for any backend behind engine/interface.py.

Times are taken where a server would see them: when step() hands a request's tokens back.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from dataclasses import dataclass, field

from engine.interface import EngineProtocol
from engine.types import SamplingParams


@dataclass(slots=True)
class RequestTiming:
    request_id: str
    added: float  # perf_counter when add_request returned
    token_times: list[float] = field(default_factory=list)  # one entry per output token
    finish_reason: str | None = None
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.added

    @property
    def num_tokens(self) -> int:
        return len(self.token_times)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first over the time after the first: the decode rate without prefill."""
        if self.num_tokens < 2:
            return 0.0
        span = self.token_times[-1] - self.token_times[0]
        return (self.num_tokens - 1) / span if span > 0 else float("inf")


def synthetic_prompts(count: int, length: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Distinct prompts (no shared prefix, so no backend gets prefix-cache hits) of ordinary ids."""
    rng = random.Random(seed)
    low, high = 32, max(33, min(vocab_size, 32000))  # clear of the special ids at either end
    return [[rng.randrange(low, high) for _ in range(length)] for _ in range(count)]


def run_requests(
    engine: EngineProtocol, prompts: list[list[int]], params: SamplingParams, prefix: str = "r"
) -> list[RequestTiming]:
    """Add every prompt at once, step until all finish; return each request's token times."""
    timings = {}
    for index, prompt in enumerate(prompts):
        request_id = f"{prefix}{index}"
        engine.add_request(request_id, prompt, params)
        timings[request_id] = RequestTiming(request_id, time.perf_counter())
    while engine.has_unfinished():
        outputs = engine.step()
        now = time.perf_counter()
        for output in outputs:
            timing = timings.get(output.request_id)
            if timing is None:
                continue
            timing.token_times += [now] * len(output.new_token_ids)
            if output.finish_reason:
                timing.finish_reason, timing.error = output.finish_reason, output.error
    failed = [t for t in timings.values() if t.finish_reason not in ("stop", "length")]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark requests failed, first: {failed[0].finish_reason} {failed[0].error}")
    return list(timings.values())


def throughput(timings: list[RequestTiming]) -> float:
    """Output tokens per second over the wall time from the first add to the last token."""
    start = min(t.added for t in timings)
    end = max(t.token_times[-1] for t in timings)
    return sum(t.num_tokens for t in timings) / (end - start)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def median(values: list[float]) -> float:
    return percentile(values, 50)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
