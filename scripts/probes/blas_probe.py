"""Probe (a device run, not a test): Llama-3.1-8B linear layers at M rows, cuBLAS vs cuBLASLt preference, per decode step."""
import sys
import torch, torch.nn.functional as F
import triton.testing
SHAPES = {"qkv": (6144, 4096, 32), "o": (4096, 4096, 32), "gate_up": (28672, 4096, 32), "down": (4096, 14336, 32), "lm_head": (128256, 4096, 1)}
for m in [int(v) for v in sys.argv[1].split(",")]:
    for lib in ("cublas", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(lib)
        total = 0.0
        parts = []
        for name, (n, k, count) in SHAPES.items():
            copies = max(2, -(-(1 << 30) // (n * k * 2)))
            ws = [torch.empty(n, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02) for _ in range(copies)]
            x = torch.randn(m, k, device="cuda").bfloat16()
            ms = triton.testing.do_bench_cudagraph(lambda: [F.linear(x, w) for w in ws], rep=100, return_mode="median") / copies
            total += ms * count
            parts.append(f"{name} {ms*1e3:.0f}us")
            del ws
        print(f"M={m} {lib}: per step {total:.2f} ms  ({', '.join(parts)})", flush=True)
