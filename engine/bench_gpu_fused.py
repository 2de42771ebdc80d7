"""A Llama decoder written directly on our Triton kernels with the decode-step fusions
(engine/kernels/triton_fused.py) and the Triton GEMV, reading the weights of the engine's model.

It has the engine model's interface as far as bench_gpu_decoders.PagedDecoder needs it
(forward(input_ids, meta), compute_logits, attention_layers), so it runs under the same paged
cache, prefill and CUDA-graph decode loop: the difference measured is the fusions alone.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from engine.kernels.triton_decode_attention import decode_attention
from engine.kernels.triton_elementwise import rms_norm
from engine.kernels.triton_fused import rms_norm_linear, rotary_write_kv, silu_mul_linear
from engine.kernels.triton_linear import linear
from engine.kernels.triton_prefill_attention import prefill_attention


class FusedLlama:
    def __init__(self, model, spec) -> None:
        self.spec = spec
        self.eps = spec.rms_norm_eps
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head  # .weight
        self.cos_sin = model.model.layers[0].self_attn.rotary.cos_sin_cache  # [P, D] float32
        self.layers = [
            SimpleNamespace(
                ln1=layer.input_layernorm.weight, wqkv=layer.self_attn.qkv_proj.weight, wo=layer.self_attn.o_proj.weight,
                ln2=layer.post_attention_layernorm.weight, wgate_up=layer.mlp.gate_up_proj.weight,
                wdown=layer.mlp.down_proj.weight, k_cache=None, v_cache=None,
            )
            for layer in model.model.layers
        ]
        self.sizes = [spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim]
        self.scale = spec.head_dim**-0.5

    def attention_layers(self) -> list[SimpleNamespace]:
        return self.layers  # PagedDecoder binds k_cache and v_cache on these

    def __call__(self, input_ids: torch.Tensor, meta) -> torch.Tensor:
        spec = self.spec
        hidden, residual = F.embedding(input_ids, self.embed), None  # [T, H]
        for layer in self.layers:
            qkv, residual = rms_norm_linear(hidden, layer.ln1, self.eps, layer.wqkv, residual)
            q, k, v = qkv.split(self.sizes, dim=-1)
            q = rotary_write_kv(
                q.view(-1, spec.num_heads, spec.head_dim), k.view(-1, spec.num_kv_heads, spec.head_dim),
                v.view(-1, spec.num_kv_heads, spec.head_dim), meta.positions, self.cos_sin,
                layer.k_cache, layer.v_cache, meta.slot_mapping,
            )
            if meta.max_query_len == 1:
                attn = decode_attention(q, layer.k_cache, layer.v_cache, meta.block_tables, meta.seq_lens, self.scale)
            else:
                attn = prefill_attention(
                    q, layer.k_cache, layer.v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc,
                    self.scale, meta.max_query_len,
                )
            hidden = linear(attn.flatten(1), layer.wo)
            gate_up, residual = rms_norm_linear(hidden, layer.ln2, self.eps, layer.wgate_up, residual)
            hidden = silu_mul_linear(gate_up, layer.wdown)
        out, _ = rms_norm(hidden, self.final_norm, self.eps, residual)
        return out

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return linear(hidden, self.lm_head.weight).float()  # [S, V]
