"""Batch-1 decoders the GPU suite times on one set of random weights:

- PagedDecoder: the engine's own Llama model (engine/models/llama.py) on the Triton kernels, a
  paged KV cache, and decode steps replayed through engine/cuda_graphs.GraphRunner. No scheduler.
- hf_generate_timings: Hugging Face transformers' eager `generate` with the same weights copied in.

Each reports time to first token (the prefill) and decode tokens per second.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from engine.attention_metadata import AttentionMetadata
from engine.cuda_graphs import GraphRunner, decode_inputs


def build_engine_model(config_name: str, max_positions: int, seed: int = 0, device: str = "cuda"):
    """The engine's model of a shipped architecture config with seeded random bf16 weights."""
    from engine.loader import load_model
    from engine.models.dummy import write_dummy_model

    folder = write_dummy_model(config_name, Path(tempfile.mkdtemp()) / config_name)  # config only: no tokenizer needed
    model, spec = load_model(
        folder, torch.device(device), torch.bfloat16, max_positions=max_positions, dummy_weights=True, seed=seed
    )
    return model, spec, folder


def _sync_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class PagedDecoder:
    """One sequence at a time over a paged cache whose blocks are laid out in order (slot = position)."""

    def __init__(self, model, spec, max_len: int, block_size: int = 16, cuda_graphs: bool = True) -> None:
        self.model, self.spec, self.block_size = model, spec, block_size
        self.device = model.lm_head.weight.device
        self.max_blocks = -(-max_len // block_size)
        self.max_len = self.max_blocks * block_size
        shape = (2, spec.num_layers, self.max_blocks, block_size, spec.num_kv_heads, spec.head_dim)
        self.kv_pool = torch.zeros(shape, dtype=torch.bfloat16, device=self.device)
        for i, attention in enumerate(model.attention_layers()):
            attention.k_cache, attention.v_cache = self.kv_pool[0, i], self.kv_pool[1, i]
        self.block_tables = torch.arange(self.max_blocks, dtype=torch.int32, device=self.device)[None]
        self.graphs = None
        if cuda_graphs:
            self.graphs = GraphRunner(self._decode_step, max_batch=1, inputs=decode_inputs(self.max_blocks))
            self.graphs.capture()

    def _decode_step(self, input_ids, positions, slot_mapping, block_tables, seq_lens, query_start_loc):
        meta = AttentionMetadata(
            positions=positions, slot_mapping=slot_mapping, block_tables=block_tables, seq_lens=seq_lens,
            query_start_loc=query_start_loc, max_query_len=1, max_seq_len=self.max_len,
            sample_indices=query_start_loc[1:].long() - 1,
        )
        hidden = self.model(input_ids, meta)  # [B, H]
        return self.model.compute_logits(hidden).argmax(-1)  # [B] greedy

    @torch.inference_mode()
    def prefill(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prompt [P] int64 -> (first token [1], its logits [1, V])."""
        num_tokens = prompt.shape[0]
        positions = torch.arange(num_tokens, device=self.device)
        meta = AttentionMetadata(
            positions=positions, slot_mapping=positions, block_tables=self.block_tables,
            seq_lens=torch.tensor([num_tokens], dtype=torch.int32, device=self.device),
            query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32, device=self.device),
            max_query_len=num_tokens, max_seq_len=num_tokens,
            sample_indices=torch.tensor([num_tokens - 1], device=self.device),
        )
        logits = self.model.compute_logits(self.model(prompt, meta)[-1:])
        return logits.argmax(-1), logits

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, new_tokens: int) -> dict:
        start = _sync_time()
        token, logits = self.prefill(prompt)
        first = _sync_time()
        position = torch.tensor([prompt.shape[0]], device=self.device)  # the next token's position
        query_start_loc = torch.tensor([0, 1], dtype=torch.int32, device=self.device)
        tokens = [token]
        step = self.graphs.run if self.graphs is not None else self._decode_step
        for _ in range(new_tokens - 1):
            token = step(
                input_ids=token, positions=position, slot_mapping=position, block_tables=self.block_tables,
                seq_lens=(position + 1).int(), query_start_loc=query_start_loc,
            ).clone()
            tokens.append(token)
            position += 1
        end = _sync_time()
        return {
            "ttft_s": first - start,
            "decode_tok_s": (new_tokens - 1) / (end - first),
            "tokens": torch.cat(tokens).tolist(),
            "first_logits": logits,
        }


def hf_model_from_engine(model, spec, folder: Path):
    """transformers' LlamaForCausalLM holding the same weights (the fused projections split back)."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(folder)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with model.lm_head.weight.device:
            hf = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    q_size, kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight)
        hf.model.norm.weight.copy_(model.model.norm.weight)
        hf.lm_head.weight.copy_(model.lm_head.weight)
        for ours, theirs in zip(model.model.layers, hf.model.layers):
            q, k, v = ours.self_attn.qkv_proj.weight.split([q_size, kv_size, kv_size])
            theirs.self_attn.q_proj.weight.copy_(q)
            theirs.self_attn.k_proj.weight.copy_(k)
            theirs.self_attn.v_proj.weight.copy_(v)
            theirs.self_attn.o_proj.weight.copy_(ours.self_attn.o_proj.weight)
            gate, up = ours.mlp.gate_up_proj.weight.chunk(2)
            theirs.mlp.gate_proj.weight.copy_(gate)
            theirs.mlp.up_proj.weight.copy_(up)
            theirs.mlp.down_proj.weight.copy_(ours.mlp.down_proj.weight)
            theirs.input_layernorm.weight.copy_(ours.input_layernorm.weight)
            theirs.post_attention_layernorm.weight.copy_(ours.post_attention_layernorm.weight)
    return hf.eval()


@torch.inference_mode()
def hf_generate_timings(hf, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Eager greedy generate: TTFT from a 1-token generate, decode rate from the difference."""
    ids = prompt[None]
    mask = torch.ones_like(ids)

    def generate(count: int):
        return hf.generate(
            ids, attention_mask=mask, max_new_tokens=count, min_new_tokens=count, do_sample=False,
            pad_token_id=0, eos_token_id=None,
        )

    generate(4)  # warm-up
    start = _sync_time()
    first = generate(1)
    one = _sync_time()
    out = generate(new_tokens)
    end = _sync_time()
    prefill_logits = hf(ids).logits[:, -1].float()
    return {
        "ttft_s": one - start,
        "decode_tok_s": (new_tokens - 1) / ((end - one) - (one - start)),
        "tokens": out[0, prompt.shape[0] :].tolist(),
        "first_token": first[0, -1].item(),
        "first_logits": prefill_logits,
    }


class triton_gemv_linears:
    """Context: the model's linear layers (and LM head) run the Triton GEMV instead of cuBLAS.
    The engine's layers call F.linear; this swaps their forward for the benchmark only."""

    def __init__(self, model) -> None:
        from engine.layers.embedding import LMHead
        from engine.layers.linear import Linear

        self.modules = [m for m in model.modules() if isinstance(m, (Linear, LMHead))]

    def __enter__(self):
        from engine.kernels.triton_linear import linear

        for module in self.modules:
            if module.__class__.__name__ == "LMHead":
                module.forward = lambda hidden, m=module: linear(hidden, m.weight).float()
            else:
                module.forward = lambda x, m=module: linear(x, m.weight, getattr(m, "bias", None))
        return self

    def __exit__(self, *exc) -> None:
        for module in self.modules:
            del module.forward
