"""Where a serving step's time goes on the GPU: the whole `torch` engine with random weights,
timed step by step and profiled with torch.profiler.

Two scenes, each printed as a table (and written as JSON with --out):
  saturated  N requests of a long prompt are prefilled, then decode steps at batch N are timed
             and their CUDA kernels ranked by GPU time;
  mixed      B requests decode while a new short prompt arrives every step: each step mixes one
             prefill chunk with B decode tokens. Host time of such a step against its GPU time.

    python -m engine.bench_gpu_profile --model-config llama-3.1-8b --out profile.json
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import click
import torch

from engine.types import SamplingParams


def _prompt(rng: random.Random, length: int, vocab: int) -> list[int]:
    return [rng.randrange(vocab) for _ in range(length)]


def _timed_steps(engine, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        engine.step()  # returns host token ids: the GPU work of the step before is done
        times.append(time.perf_counter() - started)
    return times


def _kernel_table(profiler, top: int) -> list[dict]:
    rows = []
    for event in profiler.key_averages():
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "self_cuda_time_total", 0)
        if device_us > 0:
            rows.append({"name": event.key[:90], "calls": event.count, "device_us": device_us})
    rows.sort(key=lambda row: -row["device_us"])
    return rows[:top]


def _profile(engine, steps: int, top: int) -> tuple[list[dict], float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            engine.step()
        wall = time.perf_counter() - started
    return _kernel_table(profiler, top), wall


def saturated(engine, rng, concurrency: int, prompt_len: int, steps: int, top: int) -> dict:
    vocab = engine.vocab_size
    params = SamplingParams(max_tokens=4 * steps + 64, temperature=0.0, ignore_eos=True)
    for i in range(concurrency):
        engine.add_request(f"s{i}", _prompt(rng, prompt_len, vocab), params)
    started = time.perf_counter()
    engine.step()
    prefill_kernels, prefill_wall = _profile(engine, 3, top)
    prefill_steps = 4
    while engine.stats().waiting or _prefilling(engine):
        engine.step()
        prefill_steps += 1
    prefill_s = time.perf_counter() - started
    step_times = _timed_steps(engine, steps)
    kernels, wall = _profile(engine, 5, top)
    running = engine.stats().running
    for i in range(concurrency):
        engine.abort(f"s{i}")
    while engine.has_unfinished():
        engine.step()
    return {
        "concurrency": concurrency, "prompt_len": prompt_len, "running_at_decode": running,
        "prefill_s": prefill_s, "prefill_steps": prefill_steps,
        "prefill_tok_s": concurrency * prompt_len / prefill_s,
        "decode_step_ms_median": 1000 * statistics.median(step_times),
        "decode_tok_s": running / statistics.median(step_times),
        "profiled_steps_ms": 1000 * wall / 5, "kernels": kernels,
        "profiled_prefill_steps_ms": 1000 * prefill_wall / 3, "prefill_kernels": prefill_kernels,
    }


def _prefilling(engine) -> bool:
    # A running sequence with more than one uncomputed token is still in its prefill.
    return any(len(seq.token_ids) - seq.num_computed_tokens > 1 for seq in engine.scheduler.running)


def mixed(engine, rng, batch: int, prompt_len: int, steps: int, top: int) -> dict:
    vocab = engine.vocab_size
    params = SamplingParams(max_tokens=3 * steps + 16, temperature=0.0, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"m{i}", _prompt(rng, prompt_len, vocab), params)
    while engine.stats().waiting or _prefilling(engine):
        engine.step()
    decode_times = _timed_steps(engine, steps)
    short = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    mixed_times = []
    for i in range(steps):
        engine.add_request(f"x{i}", _prompt(rng, prompt_len, vocab), short)
        mixed_times.extend(_timed_steps(engine, 1))
    for i in range(steps, steps + 3):
        engine.add_request(f"x{i}", _prompt(rng, prompt_len, vocab), short)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        engine.step()
        wall = time.perf_counter() - started
    device_us = sum(row["device_us"] for row in _kernel_table(profiler, 10_000))
    for i in range(batch):
        engine.abort(f"m{i}")
    while engine.has_unfinished():
        engine.step()
    return {
        "batch": batch, "prompt_len": prompt_len,
        "decode_step_ms_median": 1000 * statistics.median(decode_times),
        "mixed_step_ms_median": 1000 * statistics.median(mixed_times),
        "profiled_mixed_wall_ms": 1000 * wall, "profiled_mixed_device_ms": device_us / 1000,
        "kernels": _kernel_table(profiler, top),
    }


def single(engine, rng, prompt_len: int, steps: int, top: int) -> dict:
    """One request decoding alone: step time and the kernels of its decode graph."""
    params = SamplingParams(max_tokens=3 * steps + 16, temperature=0.0, ignore_eos=True)
    engine.add_request("b1", _prompt(rng, prompt_len, engine.vocab_size), params)
    while engine.stats().waiting or _prefilling(engine):
        engine.step()
    step_times = _timed_steps(engine, steps)
    kernels, wall = _profile(engine, 5, top)
    engine.abort("b1")
    while engine.has_unfinished():
        engine.step()
    return {"prompt_len": prompt_len, "decode_step_ms_median": 1000 * statistics.median(step_times),
            "decode_tok_s": 1 / statistics.median(step_times), "profiled_steps_ms": 1000 * wall / 5,
            "kernels": kernels}


def _print(name: str, result: dict) -> None:
    print(f"## {name}")
    for key, value in result.items():
        if not key.endswith("kernels"):
            print(f"  {key:28} {value:.2f}" if isinstance(value, float) else f"  {key:28} {value}")
    print(f"  {'kernel':90} {'calls':>6} {'GPU ms':>9}")
    for table in ("prefill_kernels", "kernels"):
        if table in result:
            print(f"  {table}:")
            for row in result[table]:
                print(f"  {row['name']:90} {row['calls']:6d} {row['device_us'] / 1000:9.2f}")


@click.command()
@click.option("--model-config", default="llama-3.1-8b", show_default=True)
@click.option("--concurrency", default=256, show_default=True)
@click.option("--prompt-len", default=1000, show_default=True)
@click.option("--mixed-batch", default=32, show_default=True)
@click.option("--mixed-prompt", default=128, show_default=True)
@click.option("--steps", default=20, show_default=True)
@click.option("--top", default=15, show_default=True)
@click.option("--max-num-batched-tokens", default=2048, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(model_config, concurrency, prompt_len, mixed_batch, mixed_prompt, steps, top, max_num_batched_tokens, out):
    from engine.config import EngineConfig
    from engine.engine import Engine
    import tempfile

    from engine.models.dummy import write_dummy_model

    folder = write_dummy_model(model_config, Path(tempfile.mkdtemp()) / model_config)
    config = EngineConfig(
        model=str(folder), dummy_weights=True, dtype="bfloat16", max_model_len=prompt_len + 4 * steps + 128,
        max_num_seqs=concurrency, max_num_batched_tokens=max_num_batched_tokens,
    )
    started = time.perf_counter()
    engine = Engine(config)
    print(f"# engine ready in {time.perf_counter() - started:.1f} s, {engine.stats()}", flush=True)
    rng = random.Random(0)
    results = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    results["single"] = single(engine, rng, min(512, prompt_len), steps, 40)
    _print("single", results["single"])
    results["mixed"] = mixed(engine, rng, mixed_batch, mixed_prompt, steps, top)
    _print("mixed", results["mixed"])
    results["saturated"] = saturated(engine, rng, concurrency, prompt_len, steps, top)
    _print("saturated", results["saturated"])
    if out is not None:
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
