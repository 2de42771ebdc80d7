"""Build a model from a Hugging Face folder and fill it: safetensors through each parameter's
weight_loader, or deterministic random weights for benchmarks."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from engine.errors import ModelLoadError
from engine.models.dummy import fill_dummy_weights
from engine.models.registry import model_class
from engine.models.spec import ModelSpec, read_model_spec

# Checkpoint entries that are not parameters of ours (recomputed buffers).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def load_model(
    folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    max_positions: int | None = None,
    dummy_weights: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, ModelSpec]:
    """The model of `folder`'s config.json on `device`, filled and in eval mode, with its spec.
    max_positions sizes the rotary table (default: the config's max_position_embeddings).
    Raises ModelLoadError for a missing or incomplete folder or an unsupported model."""
    spec = read_model_spec(folder)
    cls = model_class(spec.architecture)
    with _default_dtype(dtype), torch.device(device):
        try:
            model = cls(spec, max_positions or spec.max_position_embeddings)
        except ValueError as exc:  # e.g. an unsupported rope type
            raise ModelLoadError(f"{folder}: {exc}") from None
    with torch.no_grad():
        if dummy_weights:
            fill_dummy_weights(model, seed, folder=folder)
        else:
            load_safetensors(model, folder)
    return model.eval(), spec


def load_safetensors(model: nn.Module, folder: Path) -> None:
    files = _weight_files(folder)
    params = dict(model.named_parameters())
    packed = getattr(model, "packed_modules", {})
    missing = {name: set(getattr(p, "shard_ids", (None,))) for name, p in params.items()}
    tied = bool(getattr(getattr(model, "lm_head", None), "tied", False))
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as checkpoint:
            for key in checkpoint.keys():
                if key.endswith(IGNORED_SUFFIXES) or (tied and key == "lm_head.weight"):
                    continue
                name, shard_id = _our_name(key, packed)
                if name not in params:
                    raise ModelLoadError(f"{file.name}: tensor {key!r} matches no parameter of the model")
                param = params[name]
                try:
                    param.weight_loader(param, checkpoint.get_tensor(key), shard_id)
                except ValueError as exc:
                    raise ModelLoadError(f"{file.name}: {key}: {exc}") from None
                missing.get(name, set()).discard(shard_id)
    incomplete = sorted(name for name, shards in missing.items() if shards)
    if incomplete:
        shown = ", ".join(incomplete[:5]) + (" ..." if len(incomplete) > 5 else "")
        raise ModelLoadError(f"{folder}: checkpoint lacks {len(incomplete)} parameters: {shown}")


def _our_name(key: str, packed: dict) -> tuple[str, object]:
    # model.layers.3.self_attn.q_proj.weight -> (model.layers.3.self_attn.qkv_proj.weight, "q")
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part in packed:
            merged, shard_id = packed[part]
            return ".".join(parts[:i] + [merged] + parts[i + 1 :]), shard_id
    return key, None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise ModelLoadError(f"{folder}: shards listed in {index.name} are missing: {', '.join(absent)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors weights (use dummy weights for a config-only folder)")
    return files


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    # Only while the modules are built, so their parameters are created in the target dtype.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
