"""The Triton GEMV (linear layers of decode batches up to 64 rows) against F.linear, on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.engine.kernels.gpu import requires_cuda
from tests.engine.kernels.paged_inputs import relative_error

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 40, 64])
@pytest.mark.parametrize("n,k,bias", [(4096, 4096, False), (1000, 576, True), (6144, 4096, False), (96, 1536, True)])
def test_gemv_matches_cublas(rows, n, k, bias):
    from engine.kernels.triton_linear import linear

    x = torch.randn(rows, k, device="cuda").bfloat16()
    weight = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
    b = torch.randn(n, device="cuda").bfloat16() if bias else None
    poisoned = torch.full((rows, n), float("nan"), device="cuda", dtype=x.dtype)
    out = linear(x, weight, b, out=poisoned)
    assert out.shape == (rows, n)
    assert relative_error(out, F.linear(x.float(), weight.float(), None if b is None else b.float())) <= 1e-2


def test_big_batches_fall_back_to_cublas():
    from engine.kernels.triton_linear import MAX_ROWS, linear

    x = torch.randn(MAX_ROWS + 1, 256, device="cuda").bfloat16()
    weight = torch.randn(128, 256, device="cuda").bfloat16()
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight))


@pytest.mark.parametrize("n,k,bias", [(1000, 576, True), (4096, 4096, False), (37, 1100, True)])
def test_every_single_row_config_matches_cublas(n, k, bias):
    # The autotuner keeps one config per shape; each single-row (multiply-add) one must be right.
    import triton

    from engine.kernels import pdl
    from engine.kernels.triton_linear import _ROW_CONFIGS, PLAIN, _gemv_kernel, _rotary_operands

    x = torch.randn(1, k, device="cuda").bfloat16()
    weight = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
    b = torch.randn(n, device="cuda").bfloat16() if bias else None
    expected = F.linear(x.float(), weight.float(), None if b is None else b.float())
    rotary_args, rotary_meta = _rotary_operands(x, None)
    for config in _ROW_CONFIGS:
        out = torch.full((1, n), float("nan"), device="cuda", dtype=x.dtype)
        _gemv_kernel.fn[(triton.cdiv(n, config.kwargs["BLOCK_N"]),)](
            x, weight, b if b is not None else weight, out, 1, n, k, x.stride(0), weight.stride(0), out.stride(0),
            x, x, x, 0.0,  # no prologue: its residual, norm weight, new residual and eps are unused
            *rotary_args,
            HAS_BIAS=b is not None, BLOCK_M=16, ONE_ROW=True, num_warps=config.num_warps,
            num_stages=config.num_stages, PREFETCH_BYTES=pdl.prefetch_bytes(2 * k, 2 * k), PROLOGUE=PLAIN,
            **rotary_meta, WEIGHT_EVICTION="", **pdl.launch_options(), **config.kwargs,
        )
        assert relative_error(out, expected) <= 1e-2, config


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("n,k,bias", [(6144, 4096, False), (1000, 576, True), (37, 1100, True)])
def test_norm_then_linear_matches_the_two_ops(rows, with_residual, n, k, bias):
    # One row runs the norm inside the GEMV; more rows run the two kernels. Both against float32.
    from engine.kernels import reference
    from engine.kernels.triton_linear import rms_norm_linear

    x = torch.randn(rows, k, device="cuda").bfloat16()
    residual = torch.randn(rows, k, device="cuda").bfloat16() if with_residual else None
    norm_weight = (1 + 0.1 * torch.randn(k, device="cuda")).bfloat16()
    weight = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
    b = torch.randn(n, device="cuda").bfloat16() if bias else None
    out, new_residual = rms_norm_linear(x, residual, norm_weight, 1e-5, weight, b)
    if residual is None:
        expected_residual = x
        normed = reference.rms_norm(x.float(), norm_weight.float(), 1e-5)
    else:
        expected_residual = (x.float() + residual.float()).bfloat16()  # the residual stream's dtype
        normed = reference.rms_norm(expected_residual.float(), norm_weight.float(), 1e-5)
    assert torch.equal(new_residual, expected_residual)
    assert relative_error(out, F.linear(normed, weight.float(), None if b is None else b.float())) <= 1e-2


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("n,inter,bias", [(4096, 14336, False), (576, 1536, True), (37, 1100, False)])
def test_silu_and_mul_then_linear_matches_the_two_ops(rows, n, inter, bias):
    from engine.kernels import reference
    from engine.kernels.triton_linear import silu_and_mul_linear

    x = torch.randn(rows, 2 * inter, device="cuda").bfloat16()
    weight = (torch.randn(n, inter, device="cuda") * 0.02).bfloat16()
    b = torch.randn(n, device="cuda").bfloat16() if bias else None
    out = silu_and_mul_linear(x, weight, b)
    expected = F.linear(reference.silu_and_mul(x.float()), weight.float(), None if b is None else b.float())
    assert relative_error(out, expected) <= 1e-2


@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize("heads,kv_heads,head_dim,k,bias", [(32, 8, 128, 4096, False), (9, 3, 64, 576, True)])
@pytest.mark.parametrize("slot", [37, -1])
def test_qkv_with_rotary_matches_the_ops_in_turn(with_residual, cache_dtype, heads, kv_heads, head_dim, k, bias, slot):
    # One row: rotary and the cache write run in the qkv GEMV's epilogue. Against the norm-linear
    # GEMV, then the rotary + KV write kernel; no cache slot but the step's may change.
    from engine.kernels.triton_linear import rms_norm_linear, rms_norm_qkv_rotary
    from engine.kernels.triton_rotary_cache import rotary_write_kv
    from engine.layers.rotary import RotaryEmbedding

    n = (heads + 2 * kv_heads) * head_dim
    x = torch.randn(1, k, device="cuda").bfloat16()
    residual = torch.randn(1, k, device="cuda").bfloat16() if with_residual else None
    norm_weight = (1 + 0.1 * torch.randn(k, device="cuda")).bfloat16()
    weight = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
    b = torch.randn(n, device="cuda").bfloat16() if bias else None
    cos_sin = RotaryEmbedding(head_dim, 4096, 500000.0).cos_sin_cache.cuda()
    positions = torch.tensor([1234], device="cuda")
    slots = torch.tensor([slot], device="cuda")
    caches = [torch.randn(6, 16, kv_heads, head_dim, device="cuda").to(cache_dtype) for _ in range(2)]
    caches += [cache.clone() for cache in caches]  # the same starting cache for the ops in turn

    q, new_residual = rms_norm_qkv_rotary(x, residual, norm_weight, 1e-5, weight, b, heads, kv_heads, positions,
                                          cos_sin, caches[0], caches[1], slots)
    qkv, expected_residual = rms_norm_linear(x, residual, norm_weight, 1e-5, weight, b)
    q_ref, k_ref, v_ref = torch.split_with_sizes(qkv.view(1, -1, head_dim), [heads, kv_heads, kv_heads], dim=1)
    expected_q = rotary_write_kv(q_ref, k_ref, v_ref, positions, cos_sin, caches[2], caches[3], slots)
    assert q.shape == (1, heads, head_dim)
    assert relative_error(q, expected_q) <= 1e-2
    assert torch.equal(new_residual, expected_residual)
    for cache, expected in ((caches[0], caches[2]), (caches[1], caches[3])):
        written = cache.view(-1, kv_heads, head_dim)
        expected = expected.view(-1, kv_heads, head_dim)
        others = torch.ones(written.shape[0], dtype=torch.bool, device="cuda")
        if slot >= 0:
            others[slot] = False
            assert relative_error(written[slot].float(), expected[slot].float()) <= 2e-2
        assert torch.equal(written[others].view(torch.uint8), expected[others].view(torch.uint8))
