"""Where a batch-1 decode step's GPU time goes (a probe, not a benchmark): first each GEMV shape
alone, as a CUDA graph over enough copies of its weight that nothing stays in L2, against a large
reduction's read rate; then the kernels of one decode step in launch order and summed by name,
timed by torch.profiler, with early launch off and on (with it, a kernel's span includes its wait,
so only the off table gives each kernel's own time).

    python scripts/probes/step_breakdown.py
"""

import collections
import random
import statistics

import torch
from decode_variants import batch1_engine

from engine.bench_gpu_engine import _prompt
from engine.kernels import pdl
from engine.kernels.triton_linear import linear
from engine.types import SamplingParams


def graph_ms(fn, replays: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def step_kernels(engine, steps: int = 6) -> tuple[list[tuple[str, float]], float]:
    """(kernel name, GPU us) of one decode step in launch order, and the step's wall ms."""
    from torch.profiler import ProfilerActivity, profile

    engine.runner.graphs = engine.runner._capture_decode_graphs()
    engine.add_request("p", _prompt(random.Random(1), 512, engine.vocab_size),
                       SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True))
    for _ in range(8):
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    walls = []
    for _ in range(20):
        t = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t[0].record()
        engine.step()
        t[1].record()
        t[1].synchronize()
        walls.append(t[0].elapsed_time(t[1]))
    engine.abort("p")
    while engine.has_unfinished():
        engine.step()
    events = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start)
    # Every step launches the same kernels: one step is a slice of len(events) / steps of them.

    per_step = len(events) // steps
    one = events[per_step * (steps // 2): per_step * (steps // 2 + 1)]

    return [(e.name[:60], e.time_range.elapsed_us()) for e in one], statistics.median(walls)


def summarize(kernels: list[tuple[str, float]], layers: int = 32) -> None:
    total = sum(us for _, us in kernels)
    print(f"kernels in a step: {len(kernels)}, GPU sum {total:.0f} us")
    counts = collections.Counter(name for name, _ in kernels)
    per_layer = [name for name, c in counts.items() if c >= layers]
    print("kernel names with >= 32 calls:", per_layer)
    # Kernels in order; the per-layer block repeats, so group position i of the layer body.
    for i, (name, us) in enumerate(kernels[:16]):
        print(f"  {i:3d} {name:60s} {us:8.1f}")
    print("  ...")
    for i, (name, us) in enumerate(kernels[-12:], len(kernels) - 12):
        print(f"  {i:3d} {name:60s} {us:8.1f}")
    by_name = collections.defaultdict(list)
    for name, us in kernels:
        by_name[name].append(us)
    print(f"  {'name':60s} {'calls':>5s} {'sum us':>8s} {'mean':>7s}")
    for name, values in sorted(by_name.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {name:60s} {len(values):5d} {sum(values):8.0f} {statistics.mean(values):7.1f}")


def gemv_alone() -> None:
    shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
              "lm_head": (128256, 4096)}
    x_big = torch.randn(1, 14336, device="cuda", dtype=torch.bfloat16)
    print(f"{'shape':10s} {'PDL':>4s} {'us':>8s} {'TB/s':>6s}")
    for name, (n, k) in shapes.items():
        copies = max(2, (1 << 30) // (n * k * 2))
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        x = x_big[:, :k].contiguous()
        y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
        for enabled in sorted({False, SUPPORTED}):
            pdl.ENABLED = enabled
            ms = graph_ms(lambda: [linear(x, w, out=y) for w in weights])
            us = 1000 * ms / copies
            print(f"{name:10s} {int(enabled):4d} {us:8.1f} {n * k * 2 / us / 1e6:6.3f}", flush=True)
        weights = None
    pdl.ENABLED = SUPPORTED
    big = torch.randn(1 << 30, device="cuda", dtype=torch.bfloat16)
    ms = graph_ms(lambda: big.sum())
    print(f"reduction read rate: {2 * big.numel() / ms / 1e9:.3f} TB/s")


SUPPORTED = pdl.ENABLED  # early launch on this card
print(torch.cuda.get_device_name(), flush=True)
gemv_alone()
engine = batch1_engine()
for enabled in sorted({False, SUPPORTED}):
    pdl.ENABLED = enabled
    kernels, wall = step_kernels(engine)
    print(f"\n## PDL {enabled}: step {wall:.3f} ms ({1000 / wall:.1f} tok/s)")
    summarize(kernels)
pdl.ENABLED = SUPPORTED
