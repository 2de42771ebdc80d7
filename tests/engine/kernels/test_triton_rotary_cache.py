"""The fused rotary + K/V cache write equals rotary followed by write_kv (Triton, on CUDA),
bit for bit, for bf16 and fp8 caches, with padded rows (slot -1) that write nothing."""

from __future__ import annotations

import pytest
import torch

from tests.engine.kernels.gpu import requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize("heads", [(9, 3, 64), (32, 8, 128)])
def test_fused_equals_rotary_then_write(cache_dtype, heads):
    from engine.kernels.triton_cache import write_kv
    from engine.kernels.triton_elementwise import rotary
    from engine.kernels.triton_rotary_cache import rotary_write_kv
    from engine.layers.rotary import RotaryEmbedding

    num_heads, num_kv_heads, head_dim = heads
    num_tokens, num_blocks, block_size = 50, 20, 16
    generator = torch.Generator(device="cuda").manual_seed(num_heads)
    # q, k, v as views of one qkv tensor, the way the projection hands them over; some values
    # beyond fp8's range to exercise saturation.
    qkv = 4 * torch.randn(num_tokens, num_heads + 2 * num_kv_heads, head_dim, device="cuda", generator=generator)
    qkv[0, -1, :4] = 1000.0
    q, k, v = torch.split_with_sizes(qkv.to(torch.bfloat16), [num_heads, num_kv_heads, num_kv_heads], dim=1)
    positions = torch.randint(0, 4000, (num_tokens,), device="cuda", generator=generator)
    slots = torch.randperm(num_blocks * block_size, device="cuda", generator=generator)[:num_tokens]
    slots[::5] = -1
    cos_sin = RotaryEmbedding(head_dim, 4096, 500000.0, None).cos_sin_cache.to("cuda")
    caches = [torch.zeros(num_blocks, block_size, num_kv_heads, head_dim, device="cuda", dtype=cache_dtype)
              for _ in range(4)]

    q_rot, k_rot = rotary(q, k, positions, cos_sin)
    write_kv(k_rot, v, caches[0], caches[1], slots)
    fused_q = rotary_write_kv(q, k, v, positions, cos_sin, caches[2], caches[3], slots)

    assert torch.equal(fused_q, q_rot)
    assert torch.equal(caches[2].view(torch.uint8), caches[0].view(torch.uint8))
    assert torch.equal(caches[3].view(torch.uint8), caches[1].view(torch.uint8))
    assert caches[2].float().abs().sum() > 0  # something was written
