"""What every backend offers. The worker and the benchmarks speak only this."""

from __future__ import annotations

from typing import Protocol

from engine.types import EngineStats, RequestOutput, SamplingParams


class EngineProtocol(Protocol):
    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Queue a request. Raises InvalidRequestError (or ContextLengthError) for bad input."""

    def abort(self, request_id: str) -> None:
        """Drop a request; its KV blocks return to the pool. Unknown or finished ids are a no-op.
        The next step() reports it once with finish_reason "abort" if it was still live."""

    def step(self) -> list[RequestOutput]:
        """Run one batched forward pass; return the new tokens of every request that got some.
        An engine that runs ahead returns the tokens of the pass before (none after the first),
        and stays has_unfinished() until its last pass is read."""

    def has_unfinished(self) -> bool: ...

    def stats(self) -> EngineStats: ...
