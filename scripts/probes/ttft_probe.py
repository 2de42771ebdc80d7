"""TTFT of a 1,000-token prompt, several samples in one process, and the GPU kernels of one such
prefill (a probe, not a benchmark): python scripts/probes/ttft_probe.py"""

import random
import time

from decode_variants import batch1_engine

from engine.bench_gpu_engine import _drive, _prompt

engine = batch1_engine()
rng = random.Random(0)
vocab = engine.vocab_size
_drive(engine, [_prompt(rng, 64, vocab)], 8)
_drive(engine, [_prompt(rng, 512, vocab)], 128)
ttfts = []
for length in (1000, 1000, 1000, 1000, 1000, 512, 1000):
    run = _drive(engine, [_prompt(rng, length, vocab)], 1)
    ttfts.append((length, round((run["first"]["r0"] - run["start"]) * 1e3, 2)))
print("TTFT ms", ttfts, flush=True)
from torch.profiler import ProfilerActivity, profile  # noqa: E402

with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    started = time.perf_counter()
    _drive(engine, [_prompt(rng, 1000, vocab)], 1)
    wall = time.perf_counter() - started
rows = sorted(((e.self_device_time_total, e.count, e.key[:80]) for e in prof.key_averages() if e.self_device_time_total > 0),
              reverse=True)[:12]
print(f"profiled TTFT wall {wall * 1e3:.1f} ms, GPU {sum(r[0] for r in rows) / 1e3:.1f} ms (top 12)")
for us, count, name in rows:
    print(f"  {us / 1e3:7.2f} ms {count:5d}  {name}")
