"""`llmq bench gateway`: what the gateway and the queue add to time to first token (TTFT) and to
each inter-token gap (ITL), against the same null engine driven in-process.

Both sides run a closed loop of C streams (a stream sends its next request a short pause after the
last ends); the streams start together, within one engine step (see think_times). The first request
of every stream is that herd: with several streams its TTFT is reported on its own line ("herd"), and
the headline TTFT is the streams' steady state, every later request. Mixed in, the herd's share of
the samples (1 in --requests-per-stream) would move the headline percentiles with that option.
The null engine paces its steps like a real forward pass (--tokens-per-s per stream), so the
engine's own TTFT and ITL are the same on both sides and the difference is the stack: HTTP, SSE,
admission, tokenization, Celery, Redis Streams, the worker's loop and detokenization. The client
shares the machine's cores with the stack, as a real co-located load generator would; the CPU each
process spends per request is printed too, since on a machine of few cores a herd of streams starting
at once waits on the sum.

The in-process side has no client, so the stack side's client must cost next to nothing or its own
CPU is counted as the stack's: it is llmq.bench_client (asyncio + httptools, ~0.1 ms of CPU per
request) rather than httpx (~3 ms per request and ~0.1 ms per chunk, which on 2 cores held a herd of
32 streams ~100 ms in the client before the gateway saw its last request).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from llmq.paths import resolve_model

PROMPT = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)  # seconds, one per request after its stream's first
    itl: list[float] = field(default_factory=list)  # seconds, one per gap between consecutive tokens
    herd_ttft: list[float] = field(default_factory=list)  # seconds, the first request of each stream

    def add_ttft(self, seconds: float, herd: bool) -> None:
        (self.herd_ttft if herd else self.ttft).append(seconds)

    def row(self) -> dict:
        return {
            "ttft_p50_ms": _ms(self.ttft, 50), "ttft_p99_ms": _ms(self.ttft, 99),
            "itl_p50_ms": _ms(self.itl, 50), "itl_p99_ms": _ms(self.itl, 99),
            "requests": len(self.ttft),
            "herd_ttft_p50_ms": _ms(self.herd_ttft, 50), "herd_ttft_p99_ms": _ms(self.herd_ttft, 99),
            "herd_requests": len(self.herd_ttft),
        }


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3) if values else float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU each part of the stack (and this client) spends per request: on a machine of few cores
    a herd of streams is bound by their sum."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: _cpu_s(pid) for name, pid in pids.items()}
        self.client_start = time.process_time()

    def per_request_ms(self, requests: int) -> dict[str, float]:
        used = {name: _cpu_s(pid) - self.start[name] for name, pid in self.pids.items()}
        used["client"] = time.process_time() - self.client_start
        return {name: round(seconds * 1000 / max(requests, 1), 2) for name, seconds in used.items()}


def think_times(streams: int, per_stream: int, step_s: float, seed: int = 0) -> list[list[float]]:
    """Pause before each request of each stream, 1-3 engine steps, the same on both sides: streams of
    equal length would otherwise stay in lockstep and measure one thundering herd over and over.

    Every stream starts within the first engine step: the herd is measured once (and reported apart
    from the steady state that follows). Not at one instant: the in-process engine would take all of
    them into its first step (TTFT ~0.4 ms each), which no transport can match, since the first
    request to reach an idle engine starts a step before the second arrives. Measured on the
    in-process side alone, 32 arrivals 50 us apart instead of at once raise its TTFT p50 by ~6 ms
    (26 -> 32 ms): a gap a zero-latency stack would have been charged."""
    rng = np.random.default_rng(seed)
    pauses = rng.uniform(1.0, 3.0, size=(streams, per_stream)) * step_s
    pauses[:, 0] = rng.uniform(0.0, 1.0, size=streams) * step_s
    return pauses.tolist()


def in_herd(number: int, pauses: list[list[float]]) -> bool:
    """Whether a stream's request `number` is of the herd: the first one, when several streams start."""
    return number == 0 and len(pauses) > 1


def in_process(model: str, pauses: list[list[float]], max_tokens: int, tokens_per_s: float, prompt_len: int) -> Samples:
    """The null engine alone, stepped in a loop as the worker's host would: no Redis, no HTTP."""
    import heapq

    from engine.backends import create_engine
    from engine.config import EngineConfig
    from engine.types import SamplingParams

    engine = create_engine("null", EngineConfig(model=model, max_num_seqs=len(pauses)), tokens_per_s=tokens_per_s)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    samples, started, last = Samples(), {}, {}
    begin = time.perf_counter()
    due = [(begin + stream[0], i, 0) for i, stream in enumerate(pauses)]  # (when, stream, request number)
    heapq.heapify(due)
    while due or engine.has_unfinished():
        now = time.perf_counter()
        while due and due[0][0] <= now:
            arrival, stream, number = heapq.heappop(due)
            rid = f"{stream}.{number}"
            engine.add_request(rid, list(range(1, prompt_len + 1)), params)
            # From its arrival, not from the add: one that arrives during a step waits for that step to
            # end, as a job reaching the worker mid-step does.
            started[rid] = arrival
        if not engine.has_unfinished():
            time.sleep(max(due[0][0] - now, 0))  # idle until the next arrival, as the worker's loop is
            continue
        outputs = engine.step()
        now = time.perf_counter()
        for out in outputs:
            if out.new_token_ids:
                if out.request_id in last:
                    samples.itl.append(now - last[out.request_id])
                else:
                    number = int(out.request_id.split(".")[1])
                    samples.add_ttft(now - started[out.request_id], herd=in_herd(number, pauses))
                last[out.request_id] = now
            if out.finish_reason:
                stream, number = map(int, out.request_id.split("."))
                if number + 1 < len(pauses[stream]):
                    heapq.heappush(due, (now + pauses[stream][number + 1], stream, number + 1))
    return samples


async def through_stack(url: str, model_name: str, pauses: list[list[float]], max_tokens: int) -> Samples:
    import msgspec

    from llmq.bench_client import SSEClient

    samples = Samples()
    body = msgspec.json.encode({"model": model_name, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                                "stream": True})

    async def one(client: SSEClient, record: bool = True, herd: bool = False) -> None:
        start, last = time.perf_counter(), None
        async for data in client.events("/v1/chat/completions", body):
            if data == b"[DONE]":
                continue
            choices = msgspec.json.decode(data).get("choices") or []
            if not (choices and choices[0].get("delta", {}).get("content")):
                continue
            now = time.perf_counter()
            if record:
                samples.itl.append(now - last) if last is not None else samples.add_ttft(now - start, herd)
            last = now

    async def stream_user(client: SSEClient, stream_pauses: list[float]) -> None:
        for number, pause in enumerate(stream_pauses):
            await asyncio.sleep(pause)
            await one(client, herd=in_herd(number, pauses))

    client = SSEClient(url)
    try:
        await one(client, record=False)  # warm-up: the gateway's first tokenization, the worker's first job
        await asyncio.gather(*(stream_user(client, p) for p in pauses))
    finally:
        client.close()
    return samples


@click.command()
@click.option("--model", envvar="LLMQ_MODEL", default=None, help="Model folder (its tokenizer). [default: the default model]")
@click.option("--concurrency", "levels", multiple=True, type=int, default=(1, 32), show_default=True)
@click.option("--requests-per-stream", type=int, default=8, show_default=True,
              help="Requests each stream sends (a single stream sends at least 16).")
@click.option("--max-tokens", type=int, default=32, show_default=True)
@click.option("--tokens-per-s", type=float, default=50.0, show_default=True, help="Null engine pace, per stream.")
def gateway_bench(model: str | None, levels: tuple[int, ...], requests_per_stream: int, max_tokens: int,
                  tokens_per_s: float) -> None:
    """Latency the gateway and queue add over the bare engine, at 1 and 32 streams."""
    from llmq.stack import LocalStack

    folder = resolve_model(model)
    if not (folder / "config.json").exists():
        raise click.ClickException(f"model folder {folder} not found (run `llmq models pull`)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmq-bench-") as logs:
        stack = LocalStack(model=str(folder), backend="null", workers=1, log_dir=Path(logs),
                           worker_extra=("--engine-option", f"tokens_per_s={tokens_per_s}",
                                         "--concurrency", str(max(levels)), "--log-level", "warning"),
                           gateway_extra=("--log-level", "warning"))
        click.echo("starting redis, a null worker and the gateway ...", err=True)
        with stack.start(timeout=120):
            for level in levels:
                pauses = think_times(level, max(requests_per_stream, 16 // level), 1.0 / tokens_per_s)
                click.echo(f"  {level} stream(s): in-process engine ...", err=True)
                base = in_process(str(folder), pauses, max_tokens, tokens_per_s, prompt_len=40)
                click.echo(f"  {level} stream(s): through the gateway ...", err=True)
                pids = {child.name: child.process.pid for child in stack.children}
                meter = CpuMeter({**pids, "redis": stack.redis.process.pid})
                # This process holds torch since the in-process run: a full collection of its heap
                # (tens of ms) in the middle of a stream would be counted as the stack's latency.
                gc.collect()
                gc.freeze()
                full = asyncio.run(through_stack(stack.url, folder.name, pauses, max_tokens))
                cpu = meter.per_request_ms(len(full.ttft) + len(full.herd_ttft) + 1)  # + the warm-up request
                click.echo(f"  {level} stream(s): CPU per request (ms, idle time between requests included): "
                           + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()), err=True)
                rows.append((level, base.row(), {**full.row(), "cpu_per_request_ms": cpu}))
    _print(rows, tokens_per_s, max_tokens)


def _print(rows, tokens_per_s: float, max_tokens: int) -> None:
    header = f"{'streams':>7} {'path':<10} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8}  (ms)"
    click.echo(header)
    added = {}
    for level, base, full in rows:
        for name, row in (("engine", base), ("gateway", full)):
            click.echo(f"{level:>7} {name:<10} {row['ttft_p50_ms']:>9.2f} {row['ttft_p99_ms']:>9.2f} "
                       f"{row['itl_p50_ms']:>8.2f} {row['itl_p99_ms']:>8.2f}")
        delta = {key: round(full[key] - base[key], 3) for key in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms")}
        click.echo(f"{level:>7} {'added':<10} {delta['ttft_p50_ms']:>9.2f} {delta['ttft_p99_ms']:>9.2f} "
                   f"{delta['itl_p50_ms']:>8.2f}")
        if full["herd_requests"]:  # the streams' first requests, arriving together
            for key in ("herd_ttft_p50_ms", "herd_ttft_p99_ms"):
                delta[key] = round(full[key] - base[key], 3)
            click.echo(f"{level:>7} {'herd added':<10} {delta['herd_ttft_p50_ms']:>9.2f} "
                       f"{delta['herd_ttft_p99_ms']:>9.2f}   (first request of each stream; engine "
                       f"{base['herd_ttft_p50_ms']:.2f} / {base['herd_ttft_p99_ms']:.2f})")
        added[str(level)] = delta
    click.echo(json.dumps({
        "bench": "gateway", "tokens_per_s": tokens_per_s, "max_tokens": max_tokens,
        "added_ttft_p50_ms": {k: v["ttft_p50_ms"] for k, v in added.items()},
        "added_ttft_p99_ms": {k: v["ttft_p99_ms"] for k, v in added.items()},
        "added_itl_p50_ms": {k: v["itl_p50_ms"] for k, v in added.items()},
        "herd_added_ttft_p50_ms": {k: v["herd_ttft_p50_ms"] for k, v in added.items() if "herd_ttft_p50_ms" in v},
        "herd_added_ttft_p99_ms": {k: v["herd_ttft_p99_ms"] for k, v in added.items() if "herd_ttft_p99_ms" in v},
        "targets_ms": {"ttft_p50": 5, "ttft_p99": 15, "itl_p50": 1},
        "detail": {str(level): {"engine": base, "gateway": full} for level, base, full in rows},
    }))
