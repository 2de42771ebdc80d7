"""Batch-1 decode with the single-row GEMV configs the autotuner picked against one config pinned
for every layer (a probe, not a benchmark): the decode graph is captured again for each variant,
and the variants alternate.

    python scripts/probes/gemv_pin_probe.py [rounds]
"""

import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import triton

from engine.bench_gpu_engine import _drive, _prompt
from engine.config import EngineConfig
from engine.engine import Engine
from engine.kernels.triton_linear import _gemv_kernel
from engine.models.dummy import write_dummy_model

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
folder = write_dummy_model("llama-3.1-8b", Path(tempfile.mkdtemp()) / "llama-3.1-8b")
engine = Engine(EngineConfig(model=str(folder), dummy_weights=True, device="cuda", dtype="bfloat16",
                             max_model_len=2048, kv_cache_tokens=16384, max_num_seqs=1, cuda_graphs=True))
vocab = engine.vocab_size
runner = engine.runner
_drive(engine, [_prompt(random.Random(2), 64, vocab)], 8)  # autotunes every shape
tuned = {key: config for key, config in _gemv_kernel.cache.items() if key[3] is True}
print("autotuned single-row configs:", torch.cuda.get_device_name())
for key, config in tuned.items():
    print(" ", key[:5], config)


def pinned(block_n, block_k, warps, stages):
    return {key: triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "ROW": True}, num_warps=warps, num_stages=stages)
            for key in tuned}


variants = {
    "autotuned": tuned,
    "8x1024 w4 s3": pinned(8, 1024, 4, 3),
    "8x512 w4 s4": pinned(8, 512, 4, 4),
    "4x1024 w4 s4": pinned(4, 1024, 4, 4),
    "16x512 w4 s3": pinned(16, 512, 4, 3),
}
prompt = _prompt(random.Random(1), 512, vocab)
rates: dict[str, list[float]] = {name: [] for name in variants}
for round_ in range(rounds):
    names = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
    for name in names:
        _gemv_kernel.cache.update(variants[name])
        runner.graphs = runner._capture_decode_graphs()
        _drive(engine, [_prompt(random.Random(2), 64, vocab)], 8)
        run = _drive(engine, [prompt], 128)
        rates[name].append(127 / (run["last"]["r0"] - run["first"]["r0"]))
        print(f"round {round_} {name}: {rates[name][-1]:.1f} tok/s", flush=True)
base = statistics.median(rates["autotuned"])
print(f"\n{'variant':<16} {'median tok/s':>12} {'vs autotuned':>12}  samples")
for name in variants:
    med = statistics.median(rates[name])
    print(f"{name:<16} {med:12.1f} {med / base:12.3f}  {[round(r, 1) for r in rates[name]]}")
