"""Decode-step fusions (norm + GEMV, SwiGLU + GEMV, rotary + KV write) against the references, on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.kernels import reference
from tests.engine.kernels.gpu import requires_cuda
from tests.engine.kernels.paged_inputs import relative_error

pytestmark = [pytest.mark.gpu, requires_cuda]

TOLERANCE = 1e-2


def _randn(*shape, std=1.0):
    return (torch.randn(*shape, device="cuda") * std).bfloat16()


@pytest.mark.parametrize("rows", [1, 5, 16, 40])  # 40: the unfused fallback
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("hidden,out_features", [(4096, 6144), (576, 1000)])
def test_rms_norm_linear_matches_reference(rows, with_residual, hidden, out_features):
    from engine.kernels.triton_fused import rms_norm_linear

    x, norm_weight, weight = _randn(rows, hidden), _randn(hidden), _randn(out_features, hidden, std=0.02)
    residual = _randn(rows, hidden) if with_residual else None
    y, new_residual = rms_norm_linear(x, norm_weight, 1e-5, weight, residual)
    if with_residual:
        normed, ref_residual = reference.rms_norm(x.float(), norm_weight.float(), 1e-5, residual.float())
        assert relative_error(new_residual, ref_residual) <= 1e-2
    else:
        normed = reference.rms_norm(x.float(), norm_weight.float(), 1e-5)
        assert new_residual is x
    assert relative_error(y, F.linear(normed, weight.float())) <= TOLERANCE


@pytest.mark.parametrize("rows", [1, 7, 16, 33])
@pytest.mark.parametrize("inter,out_features", [(14336, 4096), (1536, 576)])
def test_silu_mul_linear_matches_reference(rows, inter, out_features):
    from engine.kernels.triton_fused import silu_mul_linear

    gate_up, weight = _randn(rows, 2 * inter), _randn(out_features, inter, std=0.02)
    ref = F.linear(reference.silu_and_mul(gate_up.float()), weight.float())
    assert relative_error(silu_mul_linear(gate_up, weight), ref) <= TOLERANCE


@pytest.mark.parametrize("num_tokens", [1, 9, 16, 20])
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(9, 3, 64), (32, 8, 128)])
def test_rotary_write_kv_matches_reference(num_tokens, num_heads, num_kv_heads, head_dim):
    from engine.kernels.triton_fused import rotary_write_kv

    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device="cuda").float() / head_dim))
    angles = torch.arange(4096, device="cuda").float()[:, None] * inv_freq[None, :]
    cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1)
    qkv = _randn(num_tokens, (num_heads + 2 * num_kv_heads) * head_dim)
    q, k, v = qkv.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    q, k, v = q.view(num_tokens, num_heads, -1), k.view(num_tokens, num_kv_heads, -1), v.view(num_tokens, num_kv_heads, -1)
    positions = torch.randint(0, 4096, (num_tokens,), device="cuda")
    slots = torch.randperm(8 * 16, device="cuda")[:num_tokens]
    slots[1::4] = -1  # padded rows; slot 0 stays live so every case checks a write
    k_cache = torch.full((8, 16, num_kv_heads, head_dim), float("nan"), device="cuda", dtype=torch.bfloat16)
    v_cache = k_cache.clone()
    q_out = rotary_write_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slots)
    ref_q, ref_k = reference.rotary(q, k, positions, cos_sin)
    assert relative_error(q_out, ref_q) <= TOLERANCE
    live = slots >= 0
    assert relative_error(k_cache.view(-1, num_kv_heads, head_dim)[slots[live]], ref_k[live]) <= TOLERANCE
    assert torch.equal(v_cache.view(-1, num_kv_heads, head_dim)[slots[live]], v[live])
    assert k_cache.isnan().sum() == (8 * 16 - live.sum()) * num_kv_heads * head_dim
