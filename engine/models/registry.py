"""Hugging Face architecture names -> our model classes, imported only when asked for."""

from __future__ import annotations

import importlib

from engine.errors import ModelLoadError

ARCHITECTURES = {
    "LlamaForCausalLM": "engine.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "engine.models.llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "engine.models.llama:LlamaForCausalLM",
}


def model_class(architecture: str) -> type:
    try:
        target = ARCHITECTURES[architecture]
    except KeyError:
        raise ModelLoadError(
            f"architecture {architecture!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        ) from None
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)
