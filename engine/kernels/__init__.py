"""Kernel entry points. Every op has a torch reference (engine/kernels/reference.py) that runs
anywhere; on CUDA the Triton versions replace them. Models call these names only.

Shapes (T = tokens of this step over all sequences, B = sequences, D = head_dim):
  write_kv(k [T,Hkv,D], v [T,Hkv,D], k_cache [N,bs,Hkv,D], v_cache [N,bs,Hkv,D], slot_mapping [T] int64)
      The Triton version skips slots < 0 (padded rows of a CUDA-graph batch).
  paged_attention(q [T,Hq,D], k_cache, v_cache, block_tables [B,max_blocks] int32, seq_lens [B] int32,
                  query_start_loc [B+1] int32, scale: float, max_query_len: int,
                  num_decodes: int = 0, out [T,Hq,D] | None = None) -> [T,Hq,D]
      Query i of sequence b sits at position seq_lens[b] - q_len_b + i and attends causally to
      positions 0..itself, all read from the paged cache (this step's K/V are written first).
      num_decodes: the leading sequences with one query each (decodes come first in a batch);
      0 where not known. With out, the result is written there.
  rms_norm(x [T,H], weight [H], eps, residual [T,H] | None) -> out | (out, new_residual)
      With residual: new_residual = x + residual; out = norm(new_residual) * weight.
  rotary(q [T,Hq,D], k [T,Hkv,D], positions [T] int64, cos_sin_cache [P, D]) -> (q, k)  (neox style)
  rotary_write_kv(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping) -> q rotated
      rotary, then write_kv of the rotated k and v: one kernel on CUDA (slot < 0: no write).
  silu_and_mul(x [T, 2I]) -> [T, I]
  linear(x [T,K], weight [N,K], bias [N] | None, out [T,N] | None = None) -> [T,N]  (bias added)
      The Triton version streams the weight with a GEMV for T <= 64 (decode), cuBLAS above.
      With out (unit stride along N), the result is written there and returned; out may be float32
      whatever x's dtype (the LM head's logits). The reference (F.linear) and cuBLAS compute in x's
      dtype and widen into out; the GEMV stores its float32 accumulator straight into out, so its
      logits are not rounded to bf16 first (and may differ from the reference in the last bf16 bit).
  rms_norm_linear(x [T,H], residual [T,H] | None, norm_weight [H], eps, weight [N,H], bias | None)
      -> (linear(rms_norm(x [+ residual])), x + residual (x without a residual))
  silu_and_mul_linear(x [T,2I], weight [N,I], bias | None) -> linear(silu_and_mul(x))
      Both are the two ops in turn; the Triton versions do a single row in one GEMV.
  rms_norm_qkv_rotary(x [T,H], residual | None, norm_weight, eps, weight [(Hq+2Hkv)*D, H], bias | None,
                      num_heads, num_kv_heads, positions, cos_sin_cache, k_cache, v_cache, slot_mapping)
      -> (q rotated [T,Hq,D], residual stream): rms_norm_linear, then rotary_write_kv of its q, k, v
      heads. The Triton version does a single row in one GEMV (the projection is never stored).
  embedding(input_ids [T] int64, weight [V,H], pending_ids [S] int64 | None) -> [T,H]
      Rows of weight. An id < 0 stands for row -1 - id of pending_ids (the last step's sampled ids,
      still on the device when the engine runs ahead): the id there is looked up.
  argmax(logits [S,V], out [S] int64 | None = None) -> [S] int64
      Each row's first index of its maximum, NaN counting above every number (the first NaN wins)
      and -inf entries allowed: torch.max(dim).indices. The Triton version reads a row with many
      programs in one launch; it can be captured in a CUDA graph once it has run with that many rows.
"""

from __future__ import annotations

from engine.kernels import reference

write_kv = reference.write_kv
paged_attention = reference.paged_attention
rms_norm = reference.rms_norm
rotary = reference.rotary
silu_and_mul = reference.silu_and_mul
linear = reference.linear
embedding = reference.embedding
argmax = reference.argmax


def _rotary_write_kv_reference(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping):
    q, k = rotary(q, k, positions, cos_sin_cache)
    write_kv(k, v, k_cache, v_cache, slot_mapping)
    return q


rotary_write_kv = _rotary_write_kv_reference


def _rms_norm_linear_composed(x, residual, norm_weight, eps, weight, bias=None):
    return reference.rms_norm_then_linear(x, residual, norm_weight, eps, weight, bias, norm=rms_norm, linear=linear)


def _silu_and_mul_linear_composed(x, weight, bias=None):
    return linear(silu_and_mul(x), weight, bias)


def _rms_norm_qkv_rotary_composed(*args):
    return reference.rms_norm_qkv_then_rotary(*args, norm_linear=rms_norm_linear, rotary_write_kv=rotary_write_kv)


rms_norm_linear = _rms_norm_linear_composed
silu_and_mul_linear = _silu_and_mul_linear_composed
rms_norm_qkv_rotary = _rms_norm_qkv_rotary_composed


def use_triton() -> bool:
    """Swap in the Triton kernels (CUDA only). Returns whether they were installed."""
    global write_kv, paged_attention, rms_norm, rotary, silu_and_mul, linear, rotary_write_kv
    global rms_norm_linear, silu_and_mul_linear, rms_norm_qkv_rotary, embedding, argmax
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        from engine.kernels import triton_ops
    except ImportError:  # no Triton on this host: the references stay
        return False
    write_kv = triton_ops.write_kv
    paged_attention = triton_ops.paged_attention
    rms_norm = triton_ops.rms_norm
    rotary = triton_ops.rotary
    silu_and_mul = triton_ops.silu_and_mul
    linear = triton_ops.linear
    rotary_write_kv = triton_ops.rotary_write_kv
    rms_norm_linear = triton_ops.rms_norm_linear
    silu_and_mul_linear = triton_ops.silu_and_mul_linear
    rms_norm_qkv_rotary = triton_ops.rms_norm_qkv_rotary
    embedding = triton_ops.embedding
    argmax = triton_ops.argmax
    return True


def use_reference() -> None:
    """Put the torch references back (tests compare both on one device)."""
    global write_kv, paged_attention, rms_norm, rotary, silu_and_mul, linear, rotary_write_kv
    global rms_norm_linear, silu_and_mul_linear, rms_norm_qkv_rotary, embedding, argmax
    write_kv = reference.write_kv
    paged_attention = reference.paged_attention
    rms_norm = reference.rms_norm
    rotary = reference.rotary
    silu_and_mul = reference.silu_and_mul
    linear = reference.linear
    rotary_write_kv = _rotary_write_kv_reference
    rms_norm_linear = _rms_norm_linear_composed
    silu_and_mul_linear = _silu_and_mul_linear_composed
    rms_norm_qkv_rotary = _rms_norm_qkv_rotary_composed
    embedding = reference.embedding
    argmax = reference.argmax
