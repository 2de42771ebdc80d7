"""Self-attention over the paged KV cache: norm and qkv projection, rotary, cache write, paged
attention. The decoder layer (engine/models/llama.py) calls norm_and_project, attend, then o_proj;
on this per-layer hot path the projection's parameters are read directly (see Linear.forward)."""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels
from engine.attention_metadata import AttentionMetadata
from engine.kernels import reference
from engine.layers.linear import Linear, MergedLinear
from engine.layers.norm import RMSNorm
from engine.layers.rotary import RotaryEmbedding


class Attention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        rotary: RotaryEmbedding,
        qkv_bias: bool = False,
        o_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim**-0.5
        # Shard ids "q", "k", "v" are the checkpoint's q_proj, k_proj, v_proj (see packed_modules).
        sizes = {"q": num_heads * head_dim, "k": num_kv_heads * head_dim, "v": num_kv_heads * head_dim}
        self.qkv_proj = MergedLinear(hidden_size, sizes, qkv_bias)
        self.o_proj = Linear(num_heads * head_dim, hidden_size, o_bias)
        self.rotary = rotary  # shared by all layers
        # [num_blocks, block_size, Hkv, D] each, bound by the runner once the pool is allocated.
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)

    def norm_and_project(
        self, norm: RMSNorm, hidden: torch.Tensor, residual: torch.Tensor | None, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """norm(hidden [+ residual]), the qkv projection, rotary, and this step's K/V written to the
        cache: (q [T, Hq, D], the residual stream after the add). Reads only meta.positions and
        meta.slot_mapping (a piecewise CUDA graph captures it)."""
        params = self.qkv_proj._parameters  # see Linear.forward
        return kernels.rms_norm_qkv_rotary(
            hidden, residual, norm._parameters["weight"], norm.eps, params["weight"], params.get("bias"),
            self.num_heads, self.num_kv_heads, meta.positions, self.rotary.cos_sin_cache, self.k_cache,
            self.v_cache, meta.slot_mapping,
        )

    def attend(self, q: torch.Tensor, meta: AttentionMetadata, out: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of q [T, Hq, D] over the paged cache -> [T, Hq * D], written into out when given."""
        if meta.lone_kv_slots is not None:
            result = reference.lone_sequence_attention(q, self.k_cache, self.v_cache, meta.lone_kv_slots, self.scale)
            return result.flatten(1) if out is None else out.copy_(result.flatten(1))
        result = kernels.paged_attention(
            q,
            self.k_cache,
            self.v_cache,
            meta.block_tables,
            meta.seq_lens,
            meta.query_start_loc,
            self.scale,
            meta.max_query_len,
            meta.num_decodes,
            None if out is None else out.view(q.shape),
        )  # [T, Hq, D]
        return result.flatten(1)
