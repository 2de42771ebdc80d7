"""Probe (a device run, not a test): Llama-3.1-8B decode GEMMs at M rows, layout/shape variants, per layer (us)."""
import sys, time
import torch, torch.nn.functional as F
import triton.testing
SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
def bench(fn):
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3
m = int(sys.argv[1])
for name, (n, k) in SHAPES.items():
    copies = max(2, -(-(1 << 30) // (n * k * 2)))
    ws = [torch.empty(n, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02) for _ in range(copies)]
    wts = [w.t().contiguous() for w in ws]
    x = torch.randn(m, k, device="cuda").bfloat16()
    a = bench(lambda: [F.linear(x, w) for w in ws]) / copies
    c = bench(lambda: [x @ wt for wt in wts]) / copies
    row = f"M={m} {name}: linear {a:.1f}  x@Wt(NN) {c:.1f}"
    if name == "gate_up":
        halves = [(w[: n // 2].contiguous(), w[n // 2 :].contiguous()) for w in ws]
        b = bench(lambda: [(F.linear(x, g), F.linear(x, u)) for g, u in halves]) / copies
        row += f"  two halves {b:.1f}"
        del halves
    print(row, flush=True)
    del ws, wts
    torch.cuda.empty_cache()
if len(sys.argv) > 2:
    torch._inductor.config.max_autotune_gemm_backends = "TRITON"
    for name in sys.argv[2].split(","):
        n, k = SHAPES[name]
        copies = max(2, -(-(1 << 30) // (n * k * 2)))
        ws = [torch.empty(n, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02) for _ in range(copies)]
        x = torch.randn(m, k, device="cuda").bfloat16()
        f = torch.compile(lambda x, w: F.linear(x, w), mode="max-autotune-no-cudagraphs", dynamic=False)
        t = time.time(); f(x, ws[0]); torch.cuda.synchronize()
        d = bench(lambda: [f(x, w) for w in ws]) / copies
        print(f"M={m} {name}: inductor triton max-autotune {d:.1f} (compile {time.time()-t:.0f} s)", flush=True)
        del ws
