"""The standard PyTorch fast path for batch-1 decoding, as a baseline for the GPU suite.

The technique is the one gpt-fast (pytorch-labs) made known: a plain PyTorch Llama with a static
KV cache [1, Hkv, max_len, D] written at the step's position, attention over the whole cache with
a mask, torch.compile (inductor) on the decoder layer, and the whole decode step captured in one
CUDA graph whose replays advance the token and the position themselves (no host work per token).
It reads the same weight tensors as the engine's model (fused qkv and gate_up projections).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [1, S, H, D]; cos, sin [S, 1, D/2] (neox / rotate-half layout)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def decoder_layer(x, weights, k_cache, v_cache, cos, sin, input_pos, mask, eps, num_heads, num_kv_heads, head_dim):
    # x [1, S, H]; k_cache, v_cache [1, Hkv, max_len, D]; input_pos [S]; mask [1, 1, S, max_len] bool
    ln1, wqkv, wo, ln2, wgate_up, wdown = weights
    seq = x.shape[1]
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    q, k, v = F.linear(_rms_norm(x, ln1, eps), wqkv).split([q_size, kv_size, kv_size], dim=-1)
    q = _rotate(q.view(1, seq, num_heads, head_dim), cos, sin).transpose(1, 2)  # [1, Hq, S, D]
    k = _rotate(k.view(1, seq, num_kv_heads, head_dim), cos, sin).transpose(1, 2)
    v = v.view(1, seq, num_kv_heads, head_dim).transpose(1, 2)
    k_cache.index_copy_(2, input_pos, k)
    v_cache.index_copy_(2, input_pos, v)
    attn = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, enable_gqa=True)
    x = x + F.linear(attn.transpose(1, 2).reshape(1, seq, q_size), wo)
    gate, up = F.linear(_rms_norm(x, ln2, eps), wgate_up).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, wdown)


class CompiledDecoder:
    def __init__(self, model, spec, max_len: int) -> None:
        self.spec, self.max_len = spec, max_len
        self.device = model.lm_head.weight.device
        self.embed = model.model.embed_tokens.weight
        self.final_norm = model.model.norm.weight
        self.lm_head = model.lm_head.weight
        self.layers = [
            (
                layer.input_layernorm.weight, layer.self_attn.qkv_proj.weight, layer.self_attn.o_proj.weight,
                layer.post_attention_layernorm.weight, layer.mlp.gate_up_proj.weight, layer.mlp.down_proj.weight,
            )
            for layer in model.model.layers
        ]
        cache_shape = (1, spec.num_kv_heads, max_len, spec.head_dim)
        self.caches = [
            tuple(torch.zeros(cache_shape, dtype=torch.bfloat16, device=self.device) for _ in range(2)) for _ in self.layers
        ]
        self.cos_sin = model.model.layers[0].self_attn.rotary.cos_sin_cache  # [P, D] float32
        self.compiled_layer = torch.compile(decoder_layer, fullgraph=True, dynamic=False)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.input_pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.graph = None

    def _forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, layer_fn) -> torch.Tensor:
        # tokens [1, S], input_pos [S] -> logits of the last position [1, V]
        spec = self.spec
        x = F.embedding(tokens, self.embed)
        cos, sin = self.cos_sin.index_select(0, input_pos)[:, None, :].chunk(2, dim=-1)
        mask = (torch.arange(self.max_len, device=self.device)[None, :] <= input_pos[:, None])[None, None]
        for weights, (k_cache, v_cache) in zip(self.layers, self.caches):
            x = layer_fn(
                x, weights, k_cache, v_cache, cos, sin, input_pos, mask,
                spec.rms_norm_eps, spec.num_heads, spec.num_kv_heads, spec.head_dim,
            )
        return F.linear(_rms_norm(x[:, -1], self.final_norm, spec.rms_norm_eps), self.lm_head).float()

    def _decode_step(self) -> None:
        logits = self._forward(self.token, self.input_pos, self.compiled_layer)
        self.token.copy_(logits.argmax(-1, keepdim=True))
        self.input_pos.add_(1)

    @torch.inference_mode()
    def prepare(self) -> None:
        """Compile (first calls) and capture the decode step."""
        for _ in range(3):
            self._decode_step()
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._decode_step()
        torch.cuda.synchronize()

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, new_tokens: int) -> dict:
        _synchronize()
        start = time.perf_counter()
        num_tokens = prompt.shape[0]
        logits = self._forward(prompt[None], torch.arange(num_tokens, device=self.device), decoder_layer)  # eager prefill
        self.token.copy_(logits.argmax(-1, keepdim=True))
        self.input_pos.fill_(num_tokens)
        _synchronize()
        first = time.perf_counter()
        tokens = [self.token.clone()]
        for _ in range(new_tokens - 1):
            self.graph.replay()
            tokens.append(self.token.clone())
        _synchronize()
        end = time.perf_counter()
        return {
            "ttft_s": first - start,
            "decode_tok_s": (new_tokens - 1) / (end - first),
            "tokens": torch.cat(tokens).flatten().tolist(),
            "first_logits": logits,
        }
