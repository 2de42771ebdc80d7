"""Self-attention over the paged KV cache: qkv projection, rotary, cache write, paged attention.

Submodules are called through `.forward` on this per-layer hot path (see engine/models/llama.py)."""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels
from engine.attention_metadata import AttentionMetadata
from engine.kernels import reference
from engine.layers.linear import Linear, MergedLinear
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
        self.head_split = [num_heads, num_kv_heads, num_kv_heads]
        self.rotary = rotary  # shared by all layers
        # [num_blocks, block_size, Hkv, D] each, bound by the runner once the pool is allocated.
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)

    def forward(self, hidden: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return self.o_proj.forward(self.attend(self.project(hidden, meta), meta))

    def project(self, hidden: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """qkv projection, rotary, and this step's K/V written to the cache: [T, H] -> q [T, Hq, D].
        Reads only meta.positions and meta.slot_mapping (a piecewise CUDA graph captures it)."""
        return self.rotate_and_cache(self.qkv_proj.forward(hidden), meta)

    def norm_and_project(
        self, norm_weight: torch.Tensor, eps: float, hidden: torch.Tensor, residual: torch.Tensor | None,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """project of rms_norm(hidden [+ residual]): (q [T, Hq, D], the residual stream after the add)."""
        params = self.qkv_proj._parameters  # see Linear.forward
        return kernels.rms_norm_qkv_rotary(
            hidden, residual, norm_weight, eps, params["weight"], params.get("bias"), self.num_heads,
            self.num_kv_heads, meta.positions, self.rotary.cos_sin_cache, self.k_cache, self.v_cache,
            meta.slot_mapping,
        )

    def rotate_and_cache(self, qkv: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """The rest of project, from its qkv projection [T, (Hq + 2 Hkv) D] -> q [T, Hq, D]."""
        qkv = qkv.view(-1, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        # torch.split_with_sizes: Tensor.split's Python wrapper costs a few microseconds a layer.
        q, k, v = torch.split_with_sizes(qkv, self.head_split, dim=1)  # [T, Hq, D], [T, Hkv, D], [T, Hkv, D]
        return kernels.rotary_write_kv(
            q, k, v, meta.positions, self.rotary.cos_sin_cache, self.k_cache, self.v_cache, meta.slot_mapping
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
