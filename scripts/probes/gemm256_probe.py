"""Probe (a device run, not a test): a Triton GEMM whose row tile holds the whole decode batch (up to
256 rows), so every weight is read from memory once, against cuBLAS at Llama-3.1-8B's linear layers.

    python scripts/probes/gemm256_probe.py 256,160

At 256 rows cuBLAS streams the weights at ~2.1 TB/s (gate_up 110 us for 235 MB); the card reads
~3.0 TB/s. Prints us per layer for cuBLAS and the best Triton config, and that config.
"""

from __future__ import annotations

import itertools
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

CONFIGS = [
    triton.Config({"BN": bn, "BK": bk}, num_warps=warps, num_stages=stages)
    for bn, bk, warps, stages in itertools.product((32, 64, 128), (64, 128), (4, 8), (3, 4))
]


@triton.autotune(configs=CONFIGS, key=["M", "N", "K"])
@triton.jit
def _whole_batch_gemm(x_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # One program per BN output columns; its row tile is the whole batch ([BM >= M] rows), so the
    # program reads its [BN, K] weight slab once. x: [M, K], w: [N, K], y: [M, N].
    pid = tl.program_id(0)
    rows = tl.arange(0, BM)
    cols = pid * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    x_ptrs = x_ptr + rows[:, None] * stride_xm + ks[None, :]
    w_ptrs = w_ptr + cols[:, None].to(tl.int64) * stride_wn + ks[None, :]
    row_mask = rows[:, None] < M
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for _ in range(0, K, BK):
        a = tl.load(x_ptrs, mask=row_mask, other=0.0)
        b = tl.load(w_ptrs)
        acc = tl.dot(a, tl.trans(b), acc)
        x_ptrs += BK
        w_ptrs += BK
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=row_mask)


def whole_batch_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    bm = max(16, triton.next_power_of_2(m))
    grid = lambda meta: (triton.cdiv(n, meta["BN"]),)  # noqa: E731
    _whole_batch_gemm[grid](x, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0), BM=bm)
    return y


SHAPES = {"qkv": (6144, 4096, 32), "o": (4096, 4096, 32), "gate_up": (28672, 4096, 32), "down": (4096, 14336, 32)}


def main() -> None:
    import triton.testing

    for m in [int(v) for v in (sys.argv[1] if len(sys.argv) > 1 else "256").split(",")]:
        totals = {"cublas": 0.0, "triton": 0.0}
        for name, (n, k, count) in SHAPES.items():
            copies = max(2, -(-(1 << 30) // (n * k * 2)))
            ws = [torch.empty(n, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02) for _ in range(copies)]
            x = torch.randn(m, k, device="cuda").bfloat16()
            ref = F.linear(x.float(), ws[0].float())
            out = whole_batch_linear(x, ws[0])  # autotunes here
            err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
            cublas = triton.testing.do_bench_cudagraph(lambda: [F.linear(x, w) for w in ws], rep=100) / copies
            mine = triton.testing.do_bench_cudagraph(lambda: [whole_batch_linear(x, w) for w in ws], rep=100) / copies
            totals["cublas"] += cublas * count
            totals["triton"] += mine * count
            print(f"M={m} {name:8} cuBLAS {cublas * 1e3:7.1f} us  Triton {mine * 1e3:7.1f} us  rel err {err:.1e}  "
                  f"best {_whole_batch_gemm.best_config}", flush=True)
            del ws
            torch.cuda.empty_cache()
        print(f"M={m} per step (32 layers, no lm_head): cuBLAS {totals['cublas']:.2f} ms  Triton {totals['triton']:.2f} ms",
              flush=True)


if __name__ == "__main__":
    main()
