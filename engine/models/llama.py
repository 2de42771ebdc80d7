"""Llama-family decoder: Llama 2/3 (llama3 rope scaling), Mistral, Qwen2 (qkv bias), SmolLM2.

Inside the decoder, submodules are called through `.forward`: nn.Module.__call__ costs about a
microsecond of hook checks a call, ten calls a layer, measured 0.4 ms of a 28 ms batch-1 decode
step on a 2-core CPU. No hooks are registered on them.
"""

from __future__ import annotations

import torch
from torch import nn

from engine import kernels
from engine.attention_metadata import AttentionMetadata
from engine.errors import ModelLoadError
from engine.layers.attention import Attention
from engine.layers.embedding import LMHead, VocabEmbedding
from engine.layers.mlp import SwiGLU
from engine.layers.norm import RMSNorm
from engine.layers.rotary import RotaryEmbedding
from engine.models.spec import ModelSpec


class LlamaDecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.self_attn = Attention(
            spec.hidden_size,
            spec.num_heads,
            spec.num_kv_heads,
            spec.head_dim,
            rotary,
            qkv_bias=spec.qkv_bias,
            o_bias=spec.o_bias,
        )
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = SwiGLU(spec.hidden_size, spec.intermediate_size, spec.mlp_bias)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, meta: AttentionMetadata):
        q, residual = self.pre_attention(hidden, residual, meta)
        return self.post_attention(self.self_attn.attend(q, meta), residual)

    # The two halves around attention, for piecewise CUDA graphs (engine/piecewise_graphs.py).
    def pre_attention(self, hidden: torch.Tensor, residual: torch.Tensor | None, meta: AttentionMetadata):
        """(hidden, residual) -> (q [T, Hq, D], residual), this step's K/V written to the cache."""
        # The residual stream is carried apart so each norm fuses the add: (hidden, residual) -> same.
        # Norm, projection, rotary and the cache write go together: a single row (batch-1 decode)
        # does all of them in one GEMV.
        return self.self_attn.norm_and_project(self.input_layernorm, hidden, residual, meta)

    def post_attention(self, attention_out: torch.Tensor, residual: torch.Tensor):
        """(attention output [T, Hq * D], residual) -> (hidden, residual) after the MLP."""
        hidden = self.self_attn.o_proj.forward(attention_out)
        gate_up, residual = _norm_then(self.post_attention_layernorm, self.mlp.gate_up_proj, hidden, residual)
        return self.mlp.down(gate_up), residual


def _norm_then(norm: RMSNorm, linear, hidden: torch.Tensor, residual: torch.Tensor | None):
    """(linear(norm(hidden [+ residual])), the residual stream after the add)."""
    params = linear._parameters  # see Linear.forward
    return kernels.rms_norm_linear(
        hidden, residual, norm._parameters["weight"], norm.eps, params["weight"], params.get("bias")
    )


class LlamaModel(nn.Module):
    def __init__(self, spec: ModelSpec, max_positions: int) -> None:
        super().__init__()
        rotary = RotaryEmbedding(spec.head_dim, max_positions, spec.rope_theta, spec.rope_scaling)
        self.embed_tokens = VocabEmbedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(spec, rotary) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None  # [T, H]
        for layer in self.layers:
            hidden, residual = layer.forward(hidden, residual, meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    # Checkpoint projection name -> (our merged module, its shard id).
    packed_modules = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, spec: ModelSpec, max_positions: int) -> None:
        super().__init__()
        if spec.hidden_act != "silu":
            raise ModelLoadError(f"activation {spec.hidden_act!r} is not supported (only silu)")
        self.spec = spec
        self.model = LlamaModel(spec, max_positions)
        tied = self.model.embed_tokens if spec.tie_word_embeddings else None
        self.lm_head = LMHead(spec.vocab_size, spec.hidden_size, tied_to=tied)

    def forward(self, input_ids: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Final hidden states [T, H] of every token of the step."""
        return self.model(input_ids, meta)

    def compute_logits(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(hidden, out)  # [S, H] -> [S, V] float32

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.model.layers]
