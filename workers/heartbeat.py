"""When a worker beats, and what its beat says (running, waiting, KV use, tokens/s, accepting)."""

from __future__ import annotations

from engine.types import EngineStats
from workers.protocol import WorkerHeartbeat

HEARTBEAT_INTERVAL_S = 1.0  # well inside HEARTBEAT_TTL_S


class Heartbeats:
    def __init__(self, worker_id: str, model: str, backend: str) -> None:
        self.worker_id, self.model, self.backend = worker_id, model, backend
        self._last_state: tuple | None = None
        self._last_at = 0.0
        self._tokens = 0  # generated since the last beat

    def count_tokens(self, n: int) -> None:
        self._tokens += n

    def forget(self) -> None:
        """The last beat may not have arrived (Redis was away): beat at the next chance."""
        self._last_state = None

    def due(self, stats: EngineStats, accepting: bool, now: float) -> WorkerHeartbeat | None:
        """A beat when the load changed (admission reads it) or the interval passed, else None."""
        state = (stats.running, stats.waiting, accepting)
        if state == self._last_state and now - self._last_at < HEARTBEAT_INTERVAL_S:
            return None
        elapsed = now - self._last_at if self._last_at else 0.0
        tokens_per_s = self._tokens / elapsed if elapsed > 0 else 0.0
        self._last_state, self._last_at, self._tokens = state, now, 0
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            model=self.model,
            backend=self.backend,
            running=stats.running,
            waiting=stats.waiting,
            kv_blocks_used=stats.kv_blocks_used,
            kv_blocks_total=stats.kv_blocks_total,
            tokens_per_s=tokens_per_s,
            max_model_len=stats.max_model_len,
            accepting=accepting,
            updated_at=now,
        )
