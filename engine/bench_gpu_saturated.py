"""Saturated throughput of the whole `torch` engine as it serves: N concurrent requests of a long
prompt and a long output, the KV pool sized from free GPU memory (gpu_memory_utilization) as a
worker sizes it, so when the pool cannot hold every sequence whole the scheduler preempts and
recomputes, as it would in service. One run per KV cache dtype, each in its own process (an
engine's CUDA graphs and pools are not all returned to the allocator when it is dropped), one table.

    python -m engine.bench_gpu_saturated --model-config llama-3.1-8b --kv-cache-dtypes auto,fp8
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch


def saturated_run(folder: Path, kv_cache_dtype: str, concurrency: int, prompt_len: int, output_len: int,
                  max_num_batched_tokens: int, deadline_s: float | None, gpu_memory_utilization: float) -> dict:
    from engine.bench_gpu_engine import _drive, _prompt
    from engine.config import EngineConfig
    from engine.engine import Engine

    config = EngineConfig(
        model=str(folder), dummy_weights=True, dtype="bfloat16", kv_cache_dtype=kv_cache_dtype,
        max_model_len=prompt_len + output_len + 16, max_num_seqs=concurrency,
        max_num_batched_tokens=max_num_batched_tokens, gpu_memory_utilization=gpu_memory_utilization,
    )
    started = time.perf_counter()
    engine = Engine(config)
    setup_s = time.perf_counter() - started
    rng = random.Random(0)
    _drive(engine, [_prompt(rng, 64, engine.vocab_size)], 8)  # warm-up
    stats = engine.stats()
    pool_tokens = stats.kv_blocks_total * stats.kv_block_size
    run = _drive(engine, [_prompt(rng, prompt_len, engine.vocab_size) for _ in range(concurrency)], output_len,
                 deadline_s)
    elapsed = run["end"] - run["start"]
    ttfts = sorted(t - run["start"] for t in run["first"].values())
    after = engine.stats()
    result = {
        "kv_cache_dtype": kv_cache_dtype, "setup_s": setup_s, "kv_pool_tokens": pool_tokens,
        "kv_pool_gb": stats.kv_cache_bytes / 1e9, "gpu_memory_utilization": gpu_memory_utilization,
        "concurrency": concurrency, "prompt_len": prompt_len,
        "output_len": output_len, "generated": run["generated"], "elapsed_s": elapsed,
        "throughput_tok_s": run["generated"] / elapsed, "median_ttft_s": ttfts[len(ttfts) // 2],
        "preemptions": after.preemptions - stats.preemptions, "steps": run["steps"],
        "stopped_at_s": deadline_s if run["stopped"] else None,
        "allocated_gib": {stage: round(n / 2**30, 2) for stage, n in engine.runner.memory.items()},
        "total_gib": round(torch.cuda.mem_get_info()[1] / 2**30, 2),
    }
    del engine
    torch.cuda.empty_cache()
    return result


@click.command()
@click.option("--model-config", default="llama-3.1-8b", show_default=True)
@click.option("--kv-cache-dtypes", default="auto,fp8", show_default=True, help="Comma-separated; one run each.")
@click.option("--concurrency", default=256, show_default=True)
@click.option("--prompt-len", default=1000, show_default=True)
@click.option("--output-len", default=1000, show_default=True)
@click.option("--max-num-batched-tokens", default=2048, show_default=True)
@click.option("--gpu-memory-utilization", default=0.90, show_default=True,
              help="Share of the GPU's memory for weights, activations and the KV pool.")
@click.option("--deadline", type=float, default=None, help="Seconds after which a run stops (its rate so far).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the results as JSON here.")
@click.option("--one", is_flag=True, hidden=True, help="Run the single dtype given and print its JSON (a child).")
def main(model_config, kv_cache_dtypes, concurrency, prompt_len, output_len, max_num_batched_tokens,
         gpu_memory_utilization, deadline, out, one):
    from engine.models.dummy import write_dummy_model

    folder = write_dummy_model(model_config, Path(tempfile.mkdtemp()) / model_config)
    if one:
        result = saturated_run(folder, kv_cache_dtypes, concurrency, prompt_len, output_len,
                               max_num_batched_tokens, deadline, gpu_memory_utilization)
        print(f"RESULT {json.dumps(result)}", flush=True)
        return
    results = []
    for kv_dtype in kv_cache_dtypes.split(","):
        print(f"# saturated run, kv_cache_dtype={kv_dtype} ...", flush=True)
        args = [sys.executable, "-m", "engine.bench_gpu_saturated", "--one", "--model-config", model_config,
                "--kv-cache-dtypes", kv_dtype, "--concurrency", str(concurrency), "--prompt-len", str(prompt_len),
                "--output-len", str(output_len), "--max-num-batched-tokens", str(max_num_batched_tokens),
                "--gpu-memory-utilization", str(gpu_memory_utilization)]
        if deadline is not None:
            args += ["--deadline", str(deadline)]
        child = subprocess.run(args, stdout=subprocess.PIPE, text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode != 0 or not lines:
            print(f"# kv_cache_dtype={kv_dtype} failed (exit {child.returncode})", flush=True)
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"# {json.dumps(results[-1])}", flush=True)
    device = torch.cuda.get_device_name()
    print(f"\nsaturated on {device}: {concurrency} x {prompt_len} in / {output_len} out, "
          f"max_num_batched_tokens {max_num_batched_tokens}, gpu_memory_utilization {gpu_memory_utilization}")
    print(f"  {'KV dtype':9} {'pool tokens':>11} {'tok/s':>8} {'elapsed s':>9} {'median TTFT s':>13} {'preempt':>7}")
    for r in results:
        cut = f"  (stopped at {r['stopped_at_s']:.0f} s)" if r["stopped_at_s"] else ""
        print(f"  {r['kv_cache_dtype']:9} {r['kv_pool_tokens']:11d} {r['throughput_tok_s']:8.0f} "
              f"{r['elapsed_s']:9.1f} {r['median_ttft_s']:13.2f} {r['preemptions']:7d}{cut}")
    if out is not None:
        out.write_text(json.dumps({"device": device, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
