"""Triton write_kv, RMSNorm, rotary and SwiGLU against the torch references, on CUDA."""

from __future__ import annotations

import pytest
import torch

from engine.kernels import reference
from tests.engine.kernels.gpu import requires_cuda
from tests.engine.kernels.paged_inputs import relative_error

pytestmark = [pytest.mark.gpu, requires_cuda]

TOLERANCE = 1e-2


def _randn(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, device="cuda").to(dtype)


@pytest.mark.parametrize("num_kv_heads,head_dim", [(3, 64), (8, 128)])
def test_write_kv_fills_exactly_the_mapped_slots(num_kv_heads, head_dim):
    from engine.kernels.triton_cache import write_kv

    num_blocks, block_size, num_tokens = 40, 16, 100
    slots = torch.randperm(num_blocks * block_size, device="cuda")[:num_tokens]
    slots[::7] = -1  # padded rows: skipped
    # k, v as strided views of one fused tensor, the way a qkv projection hands them over.
    kv = _randn(num_tokens, 2, num_kv_heads, head_dim)
    k, v = kv[:, 0], kv[:, 1]
    k_cache = torch.full((num_blocks, block_size, num_kv_heads, head_dim), float("nan"), device="cuda", dtype=torch.bfloat16)
    v_cache = k_cache.clone()
    write_kv(k, v, k_cache, v_cache, slots)
    live = slots >= 0
    flat_k = k_cache.view(-1, num_kv_heads, head_dim)
    flat_v = v_cache.view(-1, num_kv_heads, head_dim)
    assert torch.equal(flat_k[slots[live]], k[live])
    assert torch.equal(flat_v[slots[live]], v[live])
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool, device="cuda")
    untouched[slots[live]] = False
    assert flat_k[untouched].isnan().all() and flat_v[untouched].isnan().all()


@pytest.mark.parametrize("hidden", [576, 4096])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_matches_reference(hidden, with_residual):
    from engine.kernels.triton_elementwise import rms_norm

    x, weight = _randn(37, hidden), _randn(hidden)
    residual = _randn(37, hidden) if with_residual else None
    ref = reference.rms_norm(x, weight, 1e-5, residual)
    out = torch.full_like(x, float("nan"))
    new_residual = torch.full_like(x, float("nan")) if with_residual else None
    got = rms_norm(x, weight, 1e-5, residual, out=out, new_residual=new_residual)
    if with_residual:
        assert relative_error(got[0], ref[0]) <= TOLERANCE
        assert relative_error(got[1], ref[1]) <= 1e-3
    else:
        assert relative_error(got, ref) <= TOLERANCE


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(9, 3, 64), (32, 8, 128)])
def test_rotary_matches_reference(num_heads, num_kv_heads, head_dim):
    from engine.kernels.triton_elementwise import rotary

    max_pos, num_tokens = 40000, 53
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, head_dim, 2, device="cuda").float() / head_dim))
    angles = torch.arange(max_pos, device="cuda").float()[:, None] * inv_freq[None, :]
    cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1)  # [P, D]
    positions = torch.randint(0, max_pos, (num_tokens,), device="cuda")
    # q and k as strided views of one qkv row, the way the attention layer splits them.
    qkv = _randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim)
    q = qkv[:, : num_heads * head_dim].view(num_tokens, num_heads, head_dim)
    k = qkv[:, num_heads * head_dim : (num_heads + num_kv_heads) * head_dim].view(num_tokens, num_kv_heads, head_dim)
    ref_q, ref_k = reference.rotary(q, k, positions, cos_sin)
    out = (torch.full_like(ref_q, float("nan")), torch.full_like(ref_k, float("nan")))
    got_q, got_k = rotary(q, k, positions, cos_sin, out=out)
    assert relative_error(got_q, ref_q) <= TOLERANCE
    assert relative_error(got_k, ref_k) <= TOLERANCE


@pytest.mark.parametrize("inter", [1536, 14336, 1000])
def test_silu_and_mul_matches_reference(inter):
    from engine.kernels.triton_elementwise import silu_and_mul

    x = _randn(19, 2 * inter)
    ref = reference.silu_and_mul(x.float())
    out = silu_and_mul(x, out=torch.full((19, inter), float("nan"), device="cuda", dtype=x.dtype))
    assert relative_error(out, ref) <= TOLERANCE


def test_use_triton_swaps_the_entry_points_and_back():
    from engine import kernels

    try:
        assert kernels.use_triton()
        assert kernels.paged_attention is not reference.paged_attention
        assert kernels.linear is not reference.linear
        assert kernels.argmax is not reference.argmax
        x = _randn(4, 64)
        assert relative_error(kernels.silu_and_mul(x), reference.silu_and_mul(x.float())) <= TOLERANCE
    finally:
        kernels.use_reference()
    assert kernels.paged_attention is reference.paged_attention
    assert kernels.linear is reference.linear
    assert kernels.argmax is reference.argmax
