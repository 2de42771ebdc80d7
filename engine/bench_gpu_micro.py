"""Microbenchmarks of the GPU suite: device-to-device copy bandwidth (the roofline's ceiling) and
split-K decode attention against the single-block kernel at batch 1.

Kernels are timed as CUDA-graph replays (no launch gaps), median of many runs.
"""

from __future__ import annotations

import torch


def _median_ms(fn, rep_ms: int = 200) -> float:
    import triton.testing

    return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


def copy_bandwidth(num_bytes: int = 2 << 30) -> dict:
    """Bytes read plus bytes written per second of a large device-to-device copy."""
    src = torch.randn(num_bytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src))
    return {"bytes": 2 * num_bytes, "ms": ms, "gb_per_s": 2 * num_bytes / ms / 1e6}


def split_k_vs_single_block(
    contexts=(1024, 8192, 32768), num_heads: int = 32, num_kv_heads: int = 8, head_dim: int = 128,
    block_size: int = 16,
) -> list[dict]:
    """Batch 1 decode attention over a scattered paged cache; the Llama-3.1-8B head shape by default."""
    from engine.kernels import reference
    from engine.kernels.split_k import choose_num_splits
    from engine.kernels.triton_decode_attention import _num_sms, decode_attention

    rows = []
    for context in contexts:
        num_blocks = -(-context // block_size)
        gen = torch.Generator(device="cuda").manual_seed(context)
        shape = (num_blocks + 8, block_size, num_kv_heads, head_dim)
        k_cache = torch.randn(shape, device="cuda", generator=gen).bfloat16()
        v_cache = torch.randn(shape, device="cuda", generator=gen).bfloat16()
        q = torch.randn(1, num_heads, head_dim, device="cuda", generator=gen).bfloat16()
        tables = torch.randperm(num_blocks + 8, device="cuda", generator=gen)[:num_blocks].int()[None]
        seq_lens = torch.tensor([context], dtype=torch.int32, device="cuda")
        scale = head_dim**-0.5
        splits = choose_num_splits(1, num_kv_heads, num_blocks * block_size, _num_sms(q.device))
        ref = reference.paged_attention(
            q.float(), k_cache.float(), v_cache.float(), tables, seq_lens, torch.tensor([0, 1], device="cuda"), scale, 1
        )
        timings, errors = {}, {}
        for name, count in (("split_k", splits), ("single_block", 1)):
            run = lambda count=count: decode_attention(q, k_cache, v_cache, tables, seq_lens, scale, num_splits=count)  # noqa: E731
            out = run()
            errors[name] = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
            timings[name] = _median_ms(run)
        kv_bytes = 2 * context * num_kv_heads * head_dim * 2
        rows.append(
            {
                "context": context,
                "splits": splits,
                "split_k_us": timings["split_k"] * 1e3,
                "single_block_us": timings["single_block"] * 1e3,
                "speedup": timings["single_block"] / timings["split_k"],
                "split_k_gb_per_s": kv_bytes / timings["split_k"] / 1e6,
                "rel_err": max(errors.values()),
            }
        )
        del k_cache, v_cache
    return rows


# (out features N, in features K, uses per token) of Llama-3.1-8B's linear layers at batch 1.
LLAMA_8B_LINEARS = {
    "qkv": (6144, 4096, 32),
    "o": (4096, 4096, 32),
    "gate_up": (28672, 4096, 32),
    "down": (4096, 14336, 32),
    "lm_head": (128256, 4096, 1),
}


def gemv_vs_cublas(shapes: dict = LLAMA_8B_LINEARS, rotate_bytes: int = 1 << 30, batch: int = 1) -> dict:
    """Linear layers of a `batch`-row decode step: the Triton GEMV against cuBLAS (F.linear). Each
    timing cycles over enough distinct weight copies (>= 1 GiB) that no weight is served from L2."""
    import torch.nn.functional as F

    from engine.kernels.triton_linear import linear

    rows = []
    for name, (n, k, count) in shapes.items():
        size = n * k * 2
        copies = max(2, -(-rotate_bytes // size))
        weights = [torch.empty(n, k, device="cuda", dtype=torch.bfloat16).normal_(0.0, 0.02) for _ in range(copies)]
        x = torch.randn(batch, k, device="cuda").bfloat16()
        ref = F.linear(x.float(), weights[0].float())
        out = linear(x, weights[0])  # autotunes here, outside the graph capture
        err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
        cublas_ms = _median_ms(lambda: [F.linear(x, w) for w in weights]) / copies
        triton_ms = _median_ms(lambda: [linear(x, w) for w in weights]) / copies
        rows.append(
            {
                "layer": name, "batch": batch, "n": n, "k": k, "per_token": count,
                "cublas_us": cublas_ms * 1e3, "triton_us": triton_ms * 1e3,
                "cublas_gb_per_s": size / cublas_ms / 1e6, "triton_gb_per_s": size / triton_ms / 1e6,
                "rel_err": err,
            }
        )
        del weights
        torch.cuda.empty_cache()
    cublas_total = sum(r["cublas_us"] * r["per_token"] for r in rows) / 1e3
    triton_total = sum(r["triton_us"] * r["per_token"] for r in rows) / 1e3
    return {"rows": rows, "cublas_ms_per_token": cublas_total, "triton_ms_per_token": triton_total}


def read_bandwidth(num_bytes: int = 4 << 30) -> dict:
    """Bytes read per second by a large reduction (nothing written): the ceiling of a weight stream."""
    data = torch.empty(num_bytes // 2, device="cuda", dtype=torch.bfloat16).normal_()
    ms = _median_ms(lambda: data.sum(dtype=torch.float32))
    return {"bytes": num_bytes, "ms": ms, "gb_per_s": num_bytes / ms / 1e6}



def main() -> None:
    """`python -m engine.bench_gpu_micro [batches]`: the GEMV against cuBLAS for decode batches of
    these sizes (default 1,16,32,64), one table."""
    import sys

    batches = [int(b) for b in (sys.argv[1] if len(sys.argv) > 1 else "1,16,32,64").split(",")]
    print(f"linear layers of Llama-3.1-8B on {torch.cuda.get_device_name()}, weights rotated past L2")
    print(f"{'batch':>5} {'layer':8} {'cuBLAS us':>9} {'Triton us':>9} {'rel err':>8}")
    for batch in batches:
        result = gemv_vs_cublas(batch=batch)
        for row in result["rows"]:
            print(f"{batch:5d} {row['layer']:8} {row['cublas_us']:9.1f} {row['triton_us']:9.1f} {row['rel_err']:8.1e}")
        print(f"{batch:5d} {'per step':8} {result['cublas_ms_per_token'] * 1e3:9.1f} "
              f"{result['triton_ms_per_token'] * 1e3:9.1f}", flush=True)


if __name__ == "__main__":
    main()
