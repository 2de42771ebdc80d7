"""The LM head's float32 logits: widened from the activation dtype by the reference, stored as the
GEMV's float32 sums on CUDA (no separate widening kernel)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.layers.embedding import LMHead
from tests.engine.kernels.gpu import requires_cuda
from tests.engine.kernels.paged_inputs import relative_error


def lm_head(vocab: int, hidden: int, device="cpu") -> LMHead:
    head = LMHead(vocab, hidden)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(0)) * 0.05)
    return head.to(device, torch.bfloat16)


def test_reference_widens_the_activation_dtype_into_out():
    head = lm_head(64, 32)
    hidden = torch.randn(3, 32).bfloat16()
    out = torch.full((3, 64), float("nan"))
    assert head(hidden, out) is out
    torch.testing.assert_close(out, F.linear(hidden, head.weight).float(), atol=0, rtol=0)
    torch.testing.assert_close(head(hidden), out, atol=0, rtol=0)  # without out: float32 all the same


def test_a_float32_model_gets_its_logits_as_they_are():
    head = lm_head(64, 32).float()
    hidden = torch.randn(2, 32)
    logits = head(hidden)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, F.linear(hidden, head.weight), atol=0, rtol=0)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("rows", [1, 4])
def test_gemv_stores_float32_sums_into_out(rows):
    from engine import kernels

    head = lm_head(49152, 576, "cuda")
    hidden = torch.randn(rows, 576, device="cuda").bfloat16()
    expected = F.linear(hidden.float(), head.weight.float())
    try:
        assert kernels.use_triton()
        out = torch.full((rows, 49152), float("nan"), device="cuda")
        assert head(hidden, out) is out
        assert relative_error(out, expected) <= 1e-2
        # Not rounded to bf16 on the way: most sums are no bf16 number.
        assert (out != out.bfloat16().float()).float().mean().item() > 0.5
        without_out = head(hidden)
        assert without_out.dtype == torch.float32 and relative_error(without_out, expected) <= 1e-2
    finally:
        kernels.use_reference()
