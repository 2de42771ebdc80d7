"""Turn a llama-architecture GGUF file into a Hugging Face checkpoint: config, dequantized weights.

No torch: numpy arrays in, numpy arrays out, so `llmq models pull` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.")
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def field_value(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def llama_config(reader) -> dict:
    """config.json of LlamaForCausalLM from the GGUF's llama.* metadata."""
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files convert, this one is {arch!r}")
    get = lambda key, default=None: field_value(reader, f"llama.{key}", default)  # noqa: E731
    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    names = {t.name for t in reader.tensors}
    vocab = int(get("vocab_size") or len(field_value(reader, "tokenizer.ggml.tokens")))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("rope.dimension_count", hidden // heads)),
        "hidden_act": "silu",
        "max_position_embeddings": int(get("context_length")),
        "rms_norm_eps": _shortest(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "vocab_size": vocab,
        # Small llamas share the embedding with the output head; GGUF then has no output.weight.
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": int(field_value(reader, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(field_value(reader, "tokenizer.ggml.eos_token_id", 2)),
        "pad_token_id": _optional_int(field_value(reader, "tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
    }


def generation_config(config: dict) -> dict:
    return {
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"],
    }


def _shortest(value) -> float:
    # GGUF stores float32: 1e-5 reads back as 9.9999997e-06; write the decimal it was meant as.
    return float(str(np.float32(value)))


def _optional_int(value) -> int | None:
    return None if value is None else int(value)


def hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    prefix, layer, rest = gguf_name.split(".", 2)
    if prefix != "blk" or rest not in _LAYER_NAMES:
        raise ValueError(f"unexpected tensor {gguf_name!r} in a llama GGUF")
    return f"model.layers.{layer}.{_LAYER_NAMES[rest]}"


def unpermute_rope(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of q/k rows.

    HF's rotary embedding pairs dimension i with i + head_dim/2 ("rotate_half"); llama.cpp pairs
    2i with 2i+1, so its converter interleaves each head's two halves. weight: [heads * head_dim, in].
    """
    out_dim, in_dim = weight.shape
    half = out_dim // num_heads // 2
    # [heads, half, 2, in] -> [heads, 2, half, in]: put each head's even rows first, odd rows second.
    return weight.reshape(num_heads, half, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def dequantized_tensors(reader, config: dict) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, float32 array in HF's [out, in] layout) for every tensor, in file order."""
    from gguf.quants import dequantize

    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        # GGUF lists dims fastest-first; numpy (and HF) want them slowest-first.
        shape = tuple(int(d) for d in reversed(tensor.shape))
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)
        if name.endswith("q_proj.weight"):
            array = unpermute_rope(array, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            array = unpermute_rope(array, config["num_key_value_heads"])
        yield name, np.ascontiguousarray(array)


def convert_weights(reader, config: dict, progress: Callable[[str], None] = lambda _: None) -> dict:
    """All weights as {HF name: float32 array}; reports progress at every fifth of the tensors."""
    weights = {}
    total = len(reader.tensors)
    marks = {total * k // 5 for k in range(1, 6)}
    for count, (name, array) in enumerate(dequantized_tensors(reader, config), start=1):
        weights[name] = array
        if count in marks:
            progress(f"dequantized {count}/{total} tensors")
    return weights


def open_gguf(path: Path):
    from gguf import GGUFReader

    return GGUFReader(str(path))
