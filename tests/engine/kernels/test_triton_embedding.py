"""The Triton embedding (engine/kernels/triton_elementwise.py) against reference.embedding: plain
ids and pending ids looked up in the last step's ids, widths that are not a power of two, every
output element written. On the GPU, and on the CPU through Triton's interpreter (a fresh process:
the interpreter is chosen when the kernel module is imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.kernels.gpu import HAS_TRITON, requires_cuda

ROOT = Path(__file__).resolve().parents[3]

CASES = """
import torch
from engine.attention_metadata import pending_input_id
from engine.kernels import reference, triton_elementwise

def check(device, dtype, vocab, hidden, tokens):
    gen = torch.Generator().manual_seed(tokens)
    weight = torch.randn(vocab, hidden, generator=gen).to(device, dtype)
    pending = torch.randint(0, vocab, (5,), generator=gen).to(device)
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    rows = torch.randint(0, 5, (tokens,), generator=gen)
    ids = torch.where(torch.rand(tokens, generator=gen) < 0.5, -1 - rows, ids).to(device)
    out = triton_elementwise.embedding(ids, weight, pending)
    assert torch.equal(out, reference.embedding(ids, weight, pending))
    plain = ids.clamp(min=0)
    assert torch.equal(triton_elementwise.embedding(plain, weight), reference.embedding(plain, weight))
    assert triton_elementwise.embedding(ids[:0], weight, pending).shape == (0, hidden)

def run(device, dtype):
    for vocab, hidden, tokens in ((50, 64, 1), (300, 96, 7), (1000, 2304, 3)):
        check(device, dtype, vocab, hidden, tokens)
    print("ok")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="needs Triton")
def test_interpreted_kernel_matches_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    script = CASES + "run('cpu', torch.float32)\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_kernel_matches_the_reference(dtype):
    namespace: dict = {}
    exec(CASES, namespace)  # noqa: S102 - the same cases as the interpreted test
    namespace["run"]("cuda", dtype)
