"""The Triton argmax's logic on the CPU: its kernel run by Triton's interpreter (a fresh process,
since the interpreter is chosen when the kernel module is imported) against reference.argmax.
Skipped where Triton is not installed; the GPU tests are in test_triton_argmax.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.kernels.gpu import HAS_TRITON

ROOT = Path(__file__).resolve().parents[3]

CASES = """
import torch
from engine.kernels import reference, triton_argmax

def check(logits):
    out = torch.full((logits.shape[0],), -7, dtype=torch.int64)
    assert triton_argmax.launch(logits, out=out) is out
    assert out.tolist() == reference.argmax(logits).tolist(), (out.tolist(), reference.argmax(logits).tolist())
    keys, counters = triton_argmax.row_buffers(0, logits.device)
    assert not counters.any() and keys.eq(triton_argmax._EMPTY_KEY).all()

gen = torch.Generator().manual_seed(0)
for vocab in (1, 700, 1500, 70001):
    chunk = triton_argmax.chunk_size(vocab)
    check(torch.randn(3, vocab, generator=gen) * 4)
    check((torch.randn(2, vocab, generator=gen) * 4).bfloat16())  # bf16: many ties
    check(torch.zeros(2, vocab))
    check(torch.full((2, vocab), float("-inf")))
    if vocab > 1:
        ties = torch.randn(4, vocab, generator=gen)
        ties[0, [vocab - 1, 0]] = 50.0
        ties[1, [vocab - 1, vocab // 2]] = 50.0
        ties[2, [min(chunk + 3, vocab - 1), vocab - 2]] = 50.0
        ties[3, : vocab // 2] = float("-inf")
        check(ties)
        nan = torch.randn(3, vocab, generator=gen)
        nan[0, [vocab - 1, vocab // 2]] = float("nan")
        nan[1, 0] = float("inf")
        nan[1, vocab - 1] = -float("nan")
        nan[2] = -1.0
        nan[2, [vocab - 1, vocab // 2]] = torch.tensor([0.0, -0.0])
        check(nan)
check(torch.randn(4, 3000, generator=gen)[:, :2000])  # strided rows
check(torch.randn(300, 40, generator=gen))  # more rows than the first buffers hold
print("ok")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton")
def test_interpreted_kernel_matches_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CASES], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton")
def test_cpu_logits_take_torchs_argmax_and_no_buffers():
    # use_triton() swaps the entry points for the whole process; CPU logits must still work.
    import torch

    from engine.kernels import triton_argmax

    logits = torch.randn(2, 50)
    logits[1, [3, 40]] = 9.0  # a tie: the first index
    out = torch.full((2,), -7, dtype=torch.int64)
    assert triton_argmax.argmax(logits, out=out) is out
    assert out.tolist() == logits.max(dim=-1).indices.tolist() and out[1] == 3
    assert torch.device("cpu") not in triton_argmax._KEYS.buffers
