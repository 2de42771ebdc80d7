"""Batch-1 decode with and without programmatic dependent launch, in one process (a probe, not a
benchmark): the decode graph is captured again for each variant, and the variants alternate.
Greedy tokens are compared with the first variant's: PDL alone computes the same sums, the fused
norm and SwiGLU round differently.

    python scripts/probes/pdl_probe.py [rounds]
"""

import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from engine.bench_gpu_engine import _drive, _prompt
from engine.config import EngineConfig
from engine.engine import Engine
from engine.kernels import pdl, triton_linear
from engine.models.dummy import write_dummy_model
from engine.types import SamplingParams

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
# (name, PDL on, bytes of each weight row a GEMV program prefetches while it waits, norm and
#  SwiGLU inside the GEMVs)
variants = [("off", False, 0, False), ("pdl", True, 1024, False), ("pdl fused", True, 1024, True),
            ("fused", False, 0, True)]
print("PDL supported:", pdl.ENABLED, torch.cuda.get_device_name(), flush=True)

folder = write_dummy_model("llama-3.1-8b", Path(tempfile.mkdtemp()) / "llama-3.1-8b")
engine = Engine(EngineConfig(model=str(folder), dummy_weights=True, device="cuda", dtype="bfloat16",
                             max_model_len=2048, kv_cache_tokens=16384, max_num_seqs=1, cuda_graphs=True))
vocab = engine.vocab_size
runner = engine.runner


def use(enabled: bool, prefetch: int, fused: bool) -> None:
    pdl.ENABLED, pdl.PREFETCH_ROW_BYTES, triton_linear.FUSE_ONE_ROW = enabled, prefetch, fused
    runner.graphs = runner._capture_decode_graphs()


def greedy(ids: list[int], count: int) -> list[int]:
    engine.add_request("greedy", ids, SamplingParams(max_tokens=count, temperature=0.0, ignore_eos=True))
    out: list[int] = []
    while engine.has_unfinished():
        for step in engine.step():
            out.extend(step.new_token_ids)
    return out


prompt = _prompt(random.Random(1), 512, vocab)
rates: dict[str, list[float]] = {name: [] for name, *_ in variants}
tokens: dict[str, list[int]] = {}
for round_ in range(rounds):
    order = variants if round_ % 2 == 0 else variants[::-1]
    for name, *knobs in order:
        use(*knobs)
        _drive(engine, [_prompt(random.Random(2), 64, vocab)], 8)  # warm: compiles, first replays
        run = _drive(engine, [prompt], 128)
        rates[name].append(127 / (run["last"]["r0"] - run["first"]["r0"]))
        tokens.setdefault(name, greedy(prompt, 64))
        print(f"round {round_} {name}: {rates[name][-1]:.1f} tok/s", flush=True)

same = {name: toks == tokens["off"] for name, toks in tokens.items()}
print("greedy tokens equal to 'off':", same)
base = statistics.median(rates["off"])
print(f"\n{'variant':<22} {'median tok/s':>12} {'vs off':>7}  samples")
for name, *_ in variants:
    med = statistics.median(rates[name])
    print(f"{name:<22} {med:12.1f} {med / base:7.3f}  {[round(r, 1) for r in rates[name]]}")

from engine.kernels.triton_linear import _gemv_kernel  # noqa: E402

print("GEMV configs (the same in every variant):")
for key, config in _gemv_kernel.cache.items():
    print(" ", key[:4], config)
