"""The engine's one frozen configuration, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str  # path to a Hugging Face folder (config.json, safetensors, tokenizer)
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU; or float32|bfloat16|float16
    device: str = "auto"  # auto: cuda if available, else cpu
    dummy_weights: bool = False  # random weights of the folder's (or a shipped) config, for benchmarks
    block_size: int = 16
    kv_cache_tokens: int | None = None  # KV pool size in tokens; None: from kv_cache_memory / gpu_memory_utilization
    kv_cache_memory: int | None = None  # KV pool size in bytes
    gpu_memory_utilization: float = 0.90  # share of the GPU's memory for weights + activations + KV pool
    max_num_batched_tokens: int = 2048  # token budget per step (decode tokens + prefill chunks)
    max_num_seqs: int = 256  # running requests at most
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "auto"  # auto (= dtype) | int8 | fp8
    quantization: str | None = None  # None | w8a8 | fp8
    tensor_parallel_size: int = 1
    cuda_graphs: bool = True  # decode steps replay captured graphs on CUDA
    # Plan and launch step N+1 before reading step N's tokens back (engine/engine.py):
    # auto = when the runner's launches are asynchronous (CUDA); on | off.
    async_scheduling: str = "auto"
    num_threads: int | None = None  # torch intra-op threads on CPU
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.model:
            problems.append("model must be a path")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            problems.append(f"block_size must be a power of two, got {self.block_size}")
        if self.kv_cache_tokens is not None and self.kv_cache_tokens < self.block_size:
            problems.append(f"kv_cache_tokens must hold at least one block, got {self.kv_cache_tokens}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            problems.append(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            problems.append("max_num_batched_tokens and max_num_seqs must be positive")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            problems.append(f"unknown dtype {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"unknown device {self.device!r}")
        if self.kv_cache_dtype not in ("auto", "int8", "fp8"):
            problems.append(f"unknown kv_cache_dtype {self.kv_cache_dtype!r}")
        if self.async_scheduling not in ("auto", "on", "off"):
            problems.append(f"async_scheduling must be auto, on or off, got {self.async_scheduling!r}")
        if self.quantization not in (None, "w8a8", "fp8"):
            problems.append(f"unknown quantization {self.quantization!r}")
        if self.tensor_parallel_size < 1:
            problems.append("tensor_parallel_size must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))
