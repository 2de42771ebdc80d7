"""What a GenerationRun tells its reader: tokens of a choice, a choice finished, the request
failed, or nothing yet (a chance for a keep-alive)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.protocol import TokenLogprobWire


@dataclass
class Tokens:
    index: int
    token_ids: list[int]
    logprobs: list[TokenLogprobWire] | None


@dataclass
class Finished:
    index: int
    finish_reason: str


@dataclass
class Failed:
    message: str
    status: int = 503
    code: str = "worker_failed"


class Idle:
    """Nothing arrived for a while: a chance to send a keep-alive."""


Event = Tokens | Finished | Failed | Idle
