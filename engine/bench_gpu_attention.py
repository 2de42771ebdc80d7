"""Decode attention launch tilings on the GPU: the read rate of the paged decode kernel per tiling,
at the batch and context shapes the engine meets (a saturated batch, a medium one, long context).

    python -m engine.bench_gpu_attention [--out tilings.json]

The cache is scattered like a real pool (a random block permutation); the rate counts K and V
bytes read once. The default tiling is the first row of each shape; every other tiling's output is
checked against it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import click
import torch

# (batch, shortest context, longest context): lengths are spread evenly over [shortest, longest].
SHAPES = ((256, 1000, 2000), (64, 1500, 2500), (8, 4000, 4000), (1, 32768, 32768))
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16


def _tilings():
    from engine.kernels.triton_decode_attention import DEFAULT_TILING, Tiling

    yield DEFAULT_TILING
    for tile, warps, stages, head_major in itertools.product((32, 64, 128), (4, 8), (2, 3, 4), (False, True)):
        tiling = Tiling(tile, warps, stages, head_major)
        if tiling != DEFAULT_TILING:
            yield tiling


def _shape_inputs(batch: int, shortest: int, longest: int, gen: torch.Generator):
    lens = torch.linspace(shortest, longest, batch).round().int()
    blocks_per_seq = -(-lens // BLOCK_SIZE)
    num_blocks = int(blocks_per_seq.sum())
    width = int(blocks_per_seq.max())
    order = torch.randperm(num_blocks, generator=gen)
    tables = torch.zeros(batch, width, dtype=torch.int32)
    start = 0
    for row, count in enumerate(blocks_per_seq.tolist()):
        tables[row, :count] = order[start:start + count].int()
        start += count
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    k_cache = torch.empty(shape, device="cuda", dtype=torch.bfloat16).normal_(generator=None)
    v_cache = torch.empty(shape, device="cuda", dtype=torch.bfloat16).normal_(generator=None)
    q = torch.randn(batch, NUM_HEADS, HEAD_DIM, device="cuda").bfloat16()
    kv_bytes = 2 * int(lens.sum()) * NUM_KV_HEADS * HEAD_DIM * 2
    return q, k_cache, v_cache, tables.cuda(), lens.cuda(), kv_bytes


def run_or_skip(run, label: str) -> torch.Tensor | None:
    """A tiling's first output, or None (and a printed line) when it cannot run on this card, e.g.
    when it needs more shared memory than an SM has."""
    try:
        out = run()
        torch.cuda.synchronize()
    except Exception as error:  # noqa: BLE001 - a sweep goes on past the tilings that do not fit
        print(f"# {label}: {type(error).__name__}", flush=True)
        return None
    return out


def sweep() -> list[dict]:
    import triton.testing

    from engine.kernels.triton_decode_attention import decode_attention

    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch, shortest, longest in SHAPES:
        q, k_cache, v_cache, tables, lens, kv_bytes = _shape_inputs(batch, shortest, longest, gen)
        scale = HEAD_DIM**-0.5
        expected = None
        for tiling in _tilings():
            run = lambda tiling=tiling: decode_attention(q, k_cache, v_cache, tables, lens, scale, tiling=tiling)  # noqa: E731
            out = run_or_skip(run, f"{batch}x{shortest}-{longest} {tiling}")
            if out is None:
                continue
            if expected is None:
                expected = out.float()
            diff = (out.float() - expected).abs().max().item()
            ms = float(triton.testing.do_bench_cudagraph(run, rep=150, return_mode="median"))
            row = {"batch": batch, "context": f"{shortest}-{longest}", "tile": tiling.tile,
                   "warps": tiling.num_warps, "stages": tiling.num_stages, "head_major": tiling.head_major,
                   "us": ms * 1e3, "tb_per_s": kv_bytes / ms / 1e9, "max_diff": diff}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k_cache, v_cache
        torch.cuda.empty_cache()
    return rows


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(out: Path | None) -> None:
    rows = sweep()
    print(f"\ndecode attention tilings on {torch.cuda.get_device_name()} (TB/s of K+V read; first = default)")
    for shape in {row["batch"]: row["context"] for row in rows}.items():
        group = [row for row in rows if (row["batch"], row["context"]) == shape]
        best = sorted(group[1:], key=lambda row: -row["tb_per_s"])[:4]
        print(f"  batch {shape[0]:3d} ctx {shape[1]:>11}: default {group[0]['us']:9.1f} us {group[0]['tb_per_s']:.2f}")
        for row in best:
            print(f"      tile {row['tile']:3d} warps {row['warps']} stages {row['stages']} head_major "
                  f"{int(row['head_major'])}: {row['us']:9.1f} us {row['tb_per_s']:.2f}  (max diff {row['max_diff']:.1e})")
    if out is not None:
        out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
