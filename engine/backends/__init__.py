"""Backends picked by name; each is imported only when asked for."""

from __future__ import annotations

import importlib

from engine.config import EngineConfig
from engine.interface import EngineProtocol

BACKENDS = {
    "torch": "engine.engine:Engine",
    "hf": "engine.backends.hf:HFEngine",
    "hf-batched": "engine.backends.hf:HFBatchedEngine",
    "null": "engine.backends.null:NullEngine",
    "trtllm": "engine.backends.trtllm:TRTLLMEngine",
}


def create_engine(backend: str, config: EngineConfig, **options) -> EngineProtocol:
    try:
        target = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config, **options)
