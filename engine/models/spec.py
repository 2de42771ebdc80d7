"""The shape of a Llama-family model, read from a Hugging Face folder's config.json (no transformers import)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError


@dataclass(frozen=True, slots=True)
class ModelSpec:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None  # {"rope_type": "llama3", "factor": ...} or None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    sliding_window: int | None  # None: full attention
    hidden_act: str
    checkpoint_dtype: str | None  # "bfloat16", ... as the config says
    eos_token_ids: tuple[int, ...]  # config.json's and generation_config.json's, merged


def read_model_spec(folder: Path) -> ModelSpec:
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    config = _read_json(folder / "config.json", required=True)
    generation = _read_json(folder / "generation_config.json", required=False)
    architectures = config.get("architectures") or []
    if not architectures:
        raise ModelLoadError(f"{folder / 'config.json'} names no architecture")
    try:
        num_heads = config["num_attention_heads"]
        hidden_size = config["hidden_size"]
        qwen = architectures[0].startswith("Qwen2")
        rope = config.get("rope_parameters") or {}  # newer transformers nest theta and scaling here
        scaling = config.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling is not None and "rope_type" not in scaling:
            scaling = {**scaling, "rope_type": scaling.get("type", "default")}
        sliding = config.get("sliding_window") if config.get("use_sliding_window", not qwen) else None
        return ModelSpec(
            architecture=architectures[0],
            vocab_size=config["vocab_size"],
            hidden_size=hidden_size,
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=config.get("num_key_value_heads") or num_heads,
            head_dim=config.get("head_dim") or hidden_size // num_heads,
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=config.get("rope_theta", rope.get("rope_theta", 10000.0)),
            rope_scaling=scaling,
            max_position_embeddings=config.get("max_position_embeddings", 2048),
            tie_word_embeddings=config.get("tie_word_embeddings", False),
            qkv_bias=qwen or config.get("attention_bias", False),
            o_bias=not qwen and config.get("attention_bias", False),
            mlp_bias=config.get("mlp_bias", False),
            sliding_window=sliding,
            hidden_act=config.get("hidden_act", "silu"),
            checkpoint_dtype=config.get("torch_dtype") or config.get("dtype"),
            eos_token_ids=_eos_ids(config, generation),
        )
    except KeyError as exc:
        raise ModelLoadError(f"{folder / 'config.json'} lacks {exc.args[0]!r}") from None


def _eos_ids(config: dict, generation: dict) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (generation, config):
        value = source.get("eos_token_id")
        for token_id in value if isinstance(value, list) else [value]:
            if isinstance(token_id, int) and token_id not in ids:
                ids.append(token_id)
    return tuple(ids)


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise ModelLoadError(f"{path} not found: not a Hugging Face model folder")
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
