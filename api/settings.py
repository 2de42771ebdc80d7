"""The gateway's one frozen settings object. Only api/cli.py fills it from flags and LLMQ_ env vars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GatewaySettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    port: int = 8000
    # Model folders (config.json + tokenizer files); each is served under its folder name.
    models: tuple[str, ...] = ()
    require_keys: bool = False
    # Static keys accepted besides those created with `llmq keys create`; any key turns auth on.
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    # Admission bounds, per served model: requests not yet finished, and prompt + max_tokens summed.
    max_queued_requests: int = 512
    max_tokens_in_flight: int = 4_000_000
    request_timeout_s: float = 600.0  # per-request deadline unless the X-Request-Timeout header says less/more
    max_request_timeout_s: float = 3600.0
    max_attempts: int = 3  # dispatches of one request: the first plus continuations after worker loss
    keepalive_s: float = 10.0  # SSE comment sent after this long without a chunk
    redis_timeout_s: float = 1.0  # socket timeouts: a dead Redis answers 503 fast instead of hanging
    heartbeat_poll_s: float = 1.0  # how often the gateway reads worker heartbeats
    retry_after_s: int = 1  # Retry-After for 429
    unavailable_retry_after_s: int = 5  # Retry-After for 503
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_queued_requests", "max_tokens_in_flight", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("request_timeout_s", "keepalive_s", "redis_timeout_s", "heartbeat_poll_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def keys_enabled(self) -> bool:
        return self.require_keys or bool(self.api_keys)

    @property
    def model_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p).expanduser() for p in self.models)


def served_name(model_path: Path) -> str:
    return Path(model_path).name
