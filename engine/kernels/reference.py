"""Torch references of the kernel entry points (shapes in engine/kernels/__init__.py).

They run on any device and are what CPU serving uses, so they are vectorised where it pays:
a decode-only batch gathers every sequence's blocks at once and runs one batched attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def write_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    # A slot is block * block_size + offset, so the cache viewed as [N*bs, Hkv, D] is indexed by slot.
    num_kv_heads, head_dim = k_cache.shape[-2:]
    if k.dtype != k_cache.dtype:
        k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    num_decodes: int = 0,  # a hint for the GPU kernels; the reference finds the decodes itself
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    if max_query_len == 1:
        result = _decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale)
        return result if out is None else out.copy_(result)
    out = torch.empty_like(q) if out is None else out
    starts = query_start_loc.tolist()
    lens = seq_lens.tolist()
    # Decodes come first in a mixed batch: batch them together, then each prefill chunk alone.
    num_decodes = 0
    while num_decodes < len(lens) and starts[num_decodes + 1] - starts[num_decodes] == 1:
        num_decodes += 1
    if num_decodes:
        out[:num_decodes] = _decode_attention(
            q[:num_decodes], k_cache, v_cache, block_tables[:num_decodes], seq_lens[:num_decodes], scale
        )
    for b in range(num_decodes, len(lens)):
        begin, end, seq_len = starts[b], starts[b + 1], lens[b]
        if end == begin:
            continue
        k, v = _sequence_kv(k_cache, v_cache, block_tables[b], seq_len)
        out[begin:end] = _chunk_attention(q[begin:end], k, v, scale)
    return out


def _sequence_kv(k_cache, v_cache, block_row, seq_len) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's K and V [L, Hkv, D]: a view of the pool when its blocks are consecutive
    (the usual case for a lone sequence), else gathered block by block."""
    block_size = k_cache.shape[1]
    num_blocks = -(-seq_len // block_size)
    table = block_row.tolist()[:num_blocks]
    if table == list(range(table[0], table[0] + num_blocks)):
        start = table[0] * block_size
        k = k_cache.view(-1, *k_cache.shape[2:])[start : start + seq_len]
        v = v_cache.view(-1, *v_cache.shape[2:])[start : start + seq_len]
        return k, v
    blocks = block_row[:num_blocks]
    k = k_cache.index_select(0, blocks).flatten(0, 1)[:seq_len]
    v = v_cache.index_select(0, blocks).flatten(0, 1)[:seq_len]
    return k, v


def lone_sequence_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: range | torch.Tensor, scale: float
) -> torch.Tensor:
    """Decode attention of one sequence whose K/V sit in the cache slots `slots`, in position
    order: q [1, Hq, D] -> [1, Hq, D]. A range is read as a view of the pool; a [L] int64 tensor
    is gathered. No block table, no host read."""
    k_flat = k_cache.view(-1, *k_cache.shape[2:])  # [N * bs, Hkv, D]
    v_flat = v_cache.view(-1, *v_cache.shape[2:])
    if isinstance(slots, range):
        k, v = k_flat[slots.start : slots.stop], v_flat[slots.start : slots.stop]  # [L, Hkv, D]
    else:
        k, v = k_flat.index_select(0, slots), v_flat.index_select(0, slots)
    return _sdpa_one_query(q, k, v, scale)


def _sdpa_one_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    # q [1, Hq, D] as [1, Hkv, G, D]: the G query heads that share a KV head are G queries of one
    # head, with no causal mask (the one position attends to all L). Cheaper than enable_gqa on
    # the CPU (16 -> 15 us at L = 40, 36 -> 25 us at L = 300); 4-D inputs, because with 3-D ones
    # SDPA takes its slow math path on the CPU.
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    out = F.scaled_dot_product_attention(
        q.reshape(1, num_kv_heads, -1, head_dim),  # [1, Hkv, G, D]
        k.transpose(0, 1).unsqueeze(0),  # [1, Hkv, L, D]
        v.transpose(0, 1).unsqueeze(0),
        scale=scale,
    )
    return out.reshape(1, -1, head_dim)  # [1, Hq, D]


def _decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale) -> torch.Tensor:
    # q [B, Hq, D]: one query per sequence, at position seq_len - 1.
    num_seqs = block_tables.shape[0]
    if num_seqs == 1 and q.device.type == "cpu":
        # One sequence: read exactly its length, no mask (host reads are free on the CPU).
        k, v = _sequence_kv(k_cache, v_cache, block_tables[0], seq_lens.tolist()[0])  # [L, Hkv, D]
        return _sdpa_one_query(q, k, v, scale)
    # index_select on the flat table: cheaper than advanced indexing, which this runs per layer.
    flat = block_tables.view(-1)
    k = k_cache.index_select(0, flat).view(num_seqs, -1, *k_cache.shape[2:])  # [B, nb*bs, Hkv, D]
    v = v_cache.index_select(0, flat).view(num_seqs, -1, *v_cache.shape[2:])
    # Pad slots past each sequence's end are masked; the pool is zero-initialised, so they are finite.
    mask = (torch.arange(k.shape[1], device=q.device) < seq_lens[:, None])[:, None, None, :]  # [B, 1, 1, L]
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # [B, Hq, 1, D]
        k.transpose(1, 2),  # [B, Hkv, L, D]
        v.transpose(1, 2),
        attn_mask=mask,
        scale=scale,
        enable_gqa=True,
    )
    return out.squeeze(2)


def _chunk_attention(q, k, v, scale) -> torch.Tensor:
    # q [Lq, Hq, D] at the last Lq of the L positions held by k, v [L, Hkv, D].
    q_len, kv_len = q.shape[0], k.shape[0]
    if q_len == kv_len:
        mask, causal = None, True
    else:
        rows = torch.arange(q_len, device=q.device)[:, None] + (kv_len - q_len)
        mask, causal = torch.arange(kv_len, device=q.device)[None, :] <= rows, False  # [Lq, L]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0),  # [1, Hq, Lq, D]
        k.transpose(0, 1).unsqueeze(0),  # [1, Hkv, L, D]
        v.transpose(0, 1).unsqueeze(0),
        attn_mask=mask,
        is_causal=causal,
        scale=scale,
        enable_gqa=True,
    )
    return out[0].transpose(0, 1)  # [Lq, Hq, D]


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if residual is not None:
        x = x + residual
        residual = x
    if x.dtype == torch.float32:
        # Hugging Face's formula, bit for bit: mean is sum then divide on the CPU, spelled out
        # here to skip mean's dtype bookkeeping, and the temporaries are updated in place
        # (about 1.3 us less a norm at decode, 61 norms a step).
        width, eps_value = _norm_scalars(x.shape[-1], eps) if x.is_cpu else (x.shape[-1], eps)
        mean_square = torch.mul(x, x).sum(-1, keepdim=True).div_(width)  # [T, 1]
        out = torch.mul(x, mean_square.add_(eps_value).rsqrt_()).mul_(weight)
    else:
        # Normalise in float32 whatever the activation dtype, as the checkpoints were trained.
        out = weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)
    return out if residual is None else (out, residual)


_norm_scalar_cache: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_scalars(width: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """width and eps as 0-dim float32 tensors: an op with a Python number wraps it in a tensor
    each call (~1.2 us of the 2 us a [1, 1] div_ or add_ takes). Same values, same results."""
    scalars = _norm_scalar_cache.get((width, eps))
    if scalars is None:
        scalars = _norm_scalar_cache[(width, eps)] = (torch.tensor(float(width)), torch.tensor(eps))
    return scalars


def rotary(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, signed_sin = _step_cos_sin(cos_sin_cache, positions)  # [T, 1, D] each
    # q and k rotated as one [T, Hq + Hkv, D] tensor: half the ops of rotating each.
    qk = _side_by_side(q, k)
    if qk is None:
        qk = torch.cat((q, k), dim=1)
    return torch.split_with_sizes(_rotate(qk, cos, signed_sin), (q.shape[1], k.shape[1]), dim=1)


_last_cos_sin: tuple = ()  # (cos_sin_cache, positions, cos, signed_sin) of the latest CPU call


def _step_cos_sin(cos_sin_cache: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos | cos and -sin | sin [T, 1, D] of the positions. cos_sin_cache [P, D]: cos then sin of
    the D/2 frequencies (neox / rotate-half layout).

    On the CPU they are built once per step, not once per layer: every layer of a step passes
    the same positions tensor, and the runner builds a new one each step. Not on CUDA, where
    graph inputs are static buffers rewritten in place between steps."""
    global _last_cos_sin
    last = _last_cos_sin
    if last and last[0] is cos_sin_cache and last[1] is positions:
        return last[2], last[3]
    cos, sin = cos_sin_cache.index_select(0, positions).unsqueeze(1).chunk(2, dim=-1)  # [T, 1, D/2]
    cos, signed_sin = torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)
    if positions.device.type == "cpu":
        _last_cos_sin = (cos_sin_cache, positions, cos, signed_sin)
    return cos, signed_sin


def _side_by_side(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
    """q [T, Hq, D] and k [T, Hkv, D] as one [T, Hq + Hkv, D] view when k's heads follow q's in
    memory (both split from one qkv projection): a view instead of a cat."""
    # Views of one base (split from it): the same storage, without untyped_storage()'s cost.
    if q._base is None or q._base is not k._base or q.stride() != k.stride() or q.dtype != k.dtype:
        return None
    if k.data_ptr() != q.data_ptr() + q.shape[1] * q.stride(1) * q.element_size():
        return None
    return q.as_strided((q.shape[0], q.shape[1] + k.shape[1], q.shape[2]), q.stride())


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32:
        return _rotate(x.float(), cos, signed_sin).to(x.dtype)
    # x [T, H, D] = x1 | x2 -> x1 cos - x2 sin | x2 cos + x1 sin, as x * (cos | cos) plus
    # (x2 | x1) * (-sin | sin): three ops on the per-layer hot path (a flip, a mul, an addcmul).
    num_tokens, num_heads, head_dim = x.shape
    swapped = x.reshape(num_tokens, num_heads, 2, head_dim // 2).flip(2).view(num_tokens, num_heads, head_dim)
    return torch.mul(x, cos).addcmul_(swapped, signed_sin)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    gate, up = torch.split_with_sizes(x, (half, half), dim=-1)  # cheaper than Tensor.chunk
    return F.silu(gate).mul_(up)  # one allocation, not two


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    # In x's dtype, then widened into out where one is given (the LM head's float32 logits).
    y = F.linear(x, weight, bias)
    return y if out is None else out.copy_(y)


def embedding(input_ids: torch.Tensor, weight: torch.Tensor, pending_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of weight [V, H] for input_ids [T] -> [T, H]. An id < 0 is -1 - a row of pending_ids
    [S] (the last step's sampled ids, still on the device): that row's id is looked up."""
    if pending_ids is not None:
        pending = input_ids < 0
        input_ids = torch.where(pending, pending_ids[(-1 - input_ids).clamp(min=0)], input_ids)
    return F.embedding(input_ids, weight)


def argmax(logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    # max(dim) rather than argmax: the same first index of the maximum (NaN above every number),
    # 2.5x faster on the CPU (25 vs 64 us for a 49152-entry row).
    indices = logits.max(dim=-1).indices
    return indices if out is None else out.copy_(indices)


def rms_norm_then_linear(x, residual, norm_weight, eps, weight, bias=None, *, norm=rms_norm, linear=F.linear):
    """rms_norm, then linear, with the given ops: (linear(norm(x [+ residual])), the residual stream
    after the add; x itself without a residual). kernels.rms_norm_linear's contract."""
    if residual is None:
        return linear(norm(x, norm_weight, eps), weight, bias), x
    hidden, residual = norm(x, norm_weight, eps, residual)
    return linear(hidden, weight, bias), residual


def rms_norm_qkv_then_rotary(x, residual, norm_weight, eps, weight, bias, num_heads, num_kv_heads, positions,
                             cos_sin_cache, k_cache, v_cache, slot_mapping, *, norm_linear, rotary_write_kv):
    """norm_linear into the qkv projection, then rotary_write_kv of its q, k and v heads, with the
    given ops: (q rotated, the residual stream after the add). kernels.rms_norm_qkv_rotary's contract."""
    qkv, residual = norm_linear(x, residual, norm_weight, eps, weight, bias)
    qkv = qkv.view(-1, num_heads + 2 * num_kv_heads, cos_sin_cache.shape[-1])
    q, k, v = torch.split_with_sizes(qkv, [num_heads, num_kv_heads, num_kv_heads], dim=1)
    return rotary_write_kv(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping), residual
