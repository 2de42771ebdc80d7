"""One frozen settings object per worker process, built once by the CLI from flags and LLMQ_ variables."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import EngineConfig

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    model: str  # folder of a Hugging Face checkpoint
    served_model_name: str = ""  # the name clients send as "model"; default: the folder's name
    backend: str = "torch"  # a name in engine.backends.BACKENDS
    redis_url: str = DEFAULT_REDIS_URL
    worker_id: str = field(default_factory=default_worker_id)
    # Jobs this worker holds at most (Celery threads). With acks_late and prefetch 1 it is also the
    # most messages it takes from Redis; while the engine has requests waiting it takes none (intake.py).
    concurrency: int = 64
    drain_grace_s: float = 30.0  # on SIGTERM running requests get this long to finish
    log_level: str = "warning"  # info logs every request; Celery's per-task lines cost latency
    # engine
    device: str = "auto"
    dtype: str = "auto"
    max_num_seqs: int | None = None  # default: concurrency
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    tensor_parallel_size: int = 1
    cuda_graphs: bool = True
    async_scheduling: str = "auto"  # plan step N+1 before reading step N back: auto (on CUDA) | on | off
    num_threads: int | None = None
    dummy_weights: bool = False
    seed: int = 0
    engine_options: tuple[tuple[str, object], ...] = ()  # backend-specific keyword arguments

    def __post_init__(self) -> None:
        problems = []
        if self.concurrency < 1:
            problems.append(f"concurrency must be >= 1, got {self.concurrency}")
        if self.drain_grace_s < 0:
            problems.append(f"drain grace must be >= 0, got {self.drain_grace_s}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append(f"redis url must start with redis://, rediss:// or unix://, got {self.redis_url!r}")
        if problems:
            raise ValueError("; ".join(problems))
        if not self.served_model_name:
            object.__setattr__(self, "served_model_name", Path(self.model).name)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model,
            dtype=self.dtype,
            device=self.device,
            dummy_weights=self.dummy_weights,
            kv_cache_tokens=self.kv_cache_tokens,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_num_seqs=self.max_num_seqs or self.concurrency,
            max_model_len=self.max_model_len,
            kv_cache_dtype=self.kv_cache_dtype,
            quantization=self.quantization,
            tensor_parallel_size=self.tensor_parallel_size,
            cuda_graphs=self.cuda_graphs,
            async_scheduling=self.async_scheduling,
            num_threads=self.num_threads,
            seed=self.seed,
        )
