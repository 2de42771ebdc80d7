"""The Triton versions of the kernel entry points, as use_triton() installs them.

paged_attention sends a decode-only batch (max_query_len == 1) to the split-K decode kernel. A
batch with prefill chunks sends its leading decodes (num_decodes, the batch contract) to the decode
kernel too, where the query heads of a KV head share each cache read, and its chunks to the
prefill kernel.
"""

from __future__ import annotations

import torch

from engine.kernels.triton_argmax import argmax
from engine.kernels.triton_cache import write_kv
from engine.kernels.triton_decode_attention import decode_attention
from engine.kernels.triton_elementwise import embedding, rms_norm, rotary, silu_and_mul
from engine.kernels.triton_linear import linear, rms_norm_linear, rms_norm_qkv_rotary, silu_and_mul_linear
from engine.kernels.triton_prefill_attention import prefill_attention
from engine.kernels.triton_rotary_cache import rotary_write_kv

__all__ = [
    "argmax", "embedding", "linear", "paged_attention", "rms_norm", "rms_norm_linear", "rms_norm_qkv_rotary", "rotary",
    "silu_and_mul", "silu_and_mul_linear", "write_kv",
]


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    num_decodes: int = 0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    q = q if q.stride(-1) == 1 else q.contiguous()
    num_seqs = seq_lens.shape[0]
    if max_query_len == 1 and q.shape[0] == num_seqs:
        return decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale, out=out)
    out = torch.empty_like(q) if out is None else out
    if num_decodes:  # rows 0..num_decodes-1, one per sequence
        decode_attention(
            q[:num_decodes], k_cache, v_cache, block_tables[:num_decodes], seq_lens[:num_decodes], scale,
            out=out[:num_decodes],
        )
    if num_decodes < num_seqs:
        prefill_attention(
            q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, max_query_len, out=out,
            first_seq=num_decodes,
        )
    return out
