"""Batch-1 decode speed of the whole `torch` engine at a short and a long context: how much of
its speed a request keeps when its context grows (the split-K decode attention's job).

    python -m engine.bench_gpu_context --model-config llama-3.1-8b --contexts 1024,32768
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import click
import torch


@click.command()
@click.option("--model-config", default="llama-3.1-8b", show_default=True)
@click.option("--contexts", default="1024,32768", show_default=True, help="Comma-separated prompt lengths.")
@click.option("--new-tokens", default=128, show_default=True)
@click.option("--kv-cache-dtype", default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(model_config, contexts, new_tokens, kv_cache_dtype, out):
    from engine.bench_gpu_engine import _drive, _prompt
    from engine.config import EngineConfig
    from engine.engine import Engine
    from engine.models.dummy import write_dummy_model

    lengths = [int(c) for c in contexts.split(",")]
    folder = write_dummy_model(model_config, Path(tempfile.mkdtemp()) / model_config)
    config = EngineConfig(
        model=str(folder), dummy_weights=True, dtype="bfloat16", kv_cache_dtype=kv_cache_dtype,
        max_model_len=max(lengths) + new_tokens + 16, max_num_seqs=8,
    )
    started = time.perf_counter()
    engine = Engine(config)
    print(f"# engine ready in {time.perf_counter() - started:.1f} s", flush=True)
    rng = random.Random(0)
    _drive(engine, [_prompt(rng, 64, engine.vocab_size)], 8)  # warm-up
    rows = []
    for length in lengths:
        run = _drive(engine, [_prompt(rng, length, engine.vocab_size)], new_tokens)
        decode_s = run["last"]["r0"] - run["first"]["r0"]
        rows.append({"context": length, "ttft_s": run["first"]["r0"] - run["start"],
                     "decode_tok_s": (new_tokens - 1) / decode_s})
        print(f"# {json.dumps(rows[-1])}", flush=True)
    device = torch.cuda.get_device_name()
    print(f"\nbatch-1 decode by context on {device}, {new_tokens} new tokens, KV {kv_cache_dtype}")
    print(f"  {'context':>8} {'TTFT s':>8} {'decode tok/s':>12} {'vs first':>8}")
    for row in rows:
        print(f"  {row['context']:8d} {row['ttft_s']:8.3f} {row['decode_tok_s']:12.1f} "
              f"{row['decode_tok_s'] / rows[0]['decode_tok_s']:8.2f}")
    if out is not None:
        out.write_text(json.dumps({"device": device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
