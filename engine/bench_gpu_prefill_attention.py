"""Prefill attention on the GPU: TFLOP/s of the chunked-prefill kernel per launch tiling, at the
shapes the engine meets, and a mixed step's decodes in the decode kernel against inside the
prefill kernel.

    python -m engine.bench_gpu_prefill_attention [--out prefill.json]

Llama-3.1-8B heads (32 query, 8 KV, 128 dims), a 16-token block pool in random order. FLOPs count
the causal work only: 4 * D * Hq per (query, visible position). Every tiling's output is checked
against the default's.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import click
import torch

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16

# name -> (context already cached, new queries) per sequence
SCENES = {
    "8 prompts x 1000": [(0, 1000)] * 8,
    "1 prompt x 8192": [(0, 8192)],
    "chunk 2048 after 30k": [(30720, 2048)],
    "128 decodes + 7 x 1000": [(1000 + i, 1) for i in range(128)] + [(0, 1000)] * 7,
}


def _tilings():
    from engine.kernels.triton_prefill_attention import DEFAULT_TILING, PrefillTiling

    yield DEFAULT_TILING
    for block_m, block_n, warps, stages, heads_first in itertools.product(
        (64, 128), (32, 64, 128), (4, 8), (2, 3), (False, True)
    ):
        tiling = PrefillTiling(block_m, block_n, warps, stages, heads_first)
        if tiling != DEFAULT_TILING:
            yield tiling


def scene_inputs(chunks: list[tuple[int, int]], gen: torch.Generator) -> dict:
    seq_lens = [before + new for before, new in chunks]
    blocks = [-(-n // BLOCK_SIZE) for n in seq_lens]
    order = torch.randperm(sum(blocks), generator=gen)
    tables = torch.zeros(len(chunks), max(blocks), dtype=torch.int32)
    start = 0
    for row, count in enumerate(blocks):
        tables[row, :count] = order[start:start + count].int()
        start += count
    shape = (sum(blocks), BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    starts = [0]
    for _, new in chunks:
        starts.append(starts[-1] + new)
    visible = sum(new * before + new * (new + 1) // 2 for before, new in chunks)
    return {
        "q": torch.randn(starts[-1], NUM_HEADS, HEAD_DIM, device="cuda").bfloat16(),
        "k_cache": torch.randn(shape, device="cuda").bfloat16(),
        "v_cache": torch.randn(shape, device="cuda").bfloat16(),
        "block_tables": tables.cuda(),
        "seq_lens": torch.tensor(seq_lens, dtype=torch.int32, device="cuda"),
        "query_start_loc": torch.tensor(starts, dtype=torch.int32, device="cuda"),
        "max_query_len": max(new for _, new in chunks),
        "num_decodes": next((i for i, (_, new) in enumerate(chunks) if new != 1), len(chunks)),
        "flops": 4 * HEAD_DIM * NUM_HEADS * visible,
    }


def _time_ms(run) -> float:
    import triton.testing

    return float(triton.testing.do_bench(run, rep=100, return_mode="median"))


def sweep(scene_names: list[str]) -> list[dict]:
    from engine.bench_gpu_attention import run_or_skip
    from engine.kernels import triton_ops
    from engine.kernels.triton_prefill_attention import prefill_attention

    rows = []
    gen = torch.Generator().manual_seed(0)
    scale = HEAD_DIM**-0.5
    for name in scene_names:
        x = scene_inputs(SCENES[name], gen)
        args = (x["q"], x["k_cache"], x["v_cache"], x["block_tables"], x["seq_lens"], x["query_start_loc"], scale)
        if x["num_decodes"]:  # the engine's split against the whole batch in the prefill kernel
            split = lambda: triton_ops.paged_attention(*args, x["max_query_len"], x["num_decodes"])  # noqa: E731
            whole = lambda: prefill_attention(*args, x["max_query_len"])  # noqa: E731
            diff = (split().float() - whole().float()).abs().max().item()
            for path, run in (("split", split), ("all in prefill kernel", whole)):
                row = {"scene": name, "path": path, "ms": _time_ms(run), "max_diff": diff}
                rows.append(row)
                print(json.dumps(row), flush=True)
            continue
        expected = None
        for tiling in _tilings():
            run = lambda tiling=tiling: prefill_attention(*args, x["max_query_len"], tiling=tiling)  # noqa: E731
            out = run_or_skip(run, f"{name} {tiling}")
            if out is None:
                continue
            expected = out.float() if expected is None else expected
            ms = _time_ms(run)
            row = {"scene": name, "block_m": tiling.block_m, "block_n": tiling.block_n, "warps": tiling.num_warps,
                   "stages": tiling.num_stages, "heads_first": tiling.heads_first, "ms": ms,
                   "tflops": x["flops"] / ms / 1e9, "max_diff": (out.float() - expected).abs().max().item()}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del x
        torch.cuda.empty_cache()
    return rows


@click.command()
@click.option("--scene", "scenes", multiple=True, type=click.Choice(list(SCENES)), help="Default: all.")
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(scenes: tuple[str, ...], out: Path | None) -> None:
    rows = sweep(list(scenes) or list(SCENES))
    print(f"\nprefill attention on {torch.cuda.get_device_name()} (first row of a scene = the default tiling)")
    for name in dict.fromkeys(row["scene"] for row in rows):
        group = [row for row in rows if row["scene"] == name]
        if "path" in group[0]:
            for row in group:
                print(f"  {name:24s} {row['path']:22s} {row['ms'] * 1e3:9.1f} us  (max diff {row['max_diff']:.1e})")
            continue
        print(f"  {name:24s} default {group[0]['ms'] * 1e3:9.1f} us {group[0]['tflops']:6.1f} TFLOP/s")
        for row in sorted(group[1:], key=lambda row: row["ms"])[:4]:
            print(f"      m {row['block_m']:3d} n {row['block_n']:3d} warps {row['warps']} stages {row['stages']} "
                  f"heads_first {int(row['heads_first'])}: {row['ms'] * 1e3:9.1f} us {row['tflops']:6.1f} TFLOP/s "
                  f"(max diff {row['max_diff']:.1e})")
    if out is not None:
        out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
