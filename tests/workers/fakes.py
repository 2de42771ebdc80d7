"""A scripted engine for unit tests of the worker's logic: token i of a request is 1000 + i."""

from __future__ import annotations

import threading
import time

from engine.errors import InvalidRequestError
from engine.types import EngineStats, RequestOutput, SamplingParams


class ScriptedEngine:
    def __init__(self, step_s: float = 0.0) -> None:
        self.step_s = step_s  # stands in for compute time, so streams stay open long enough to poke at
        self.requests: dict[str, list] = {}  # rid -> [params, tokens emitted]
        self.added: list[str] = []
        self.aborted: list[str] = []
        self.fail_next_step = False
        self.cached_tokens = 0  # reported with a request's first output, as a prefix cache would
        self.steps = 0
        self._lock = threading.Lock()

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        if not prompt_token_ids:
            raise InvalidRequestError("empty prompt")
        self.requests[request_id] = [params, 0]
        self.added.append(request_id)

    def abort(self, request_id: str) -> None:
        if self.requests.pop(request_id, None) is not None:
            self.aborted.append(request_id)

    def step(self) -> list[RequestOutput]:
        self.steps += 1
        if self.fail_next_step:
            self.fail_next_step = False
            raise RuntimeError("kernel exploded")
        if self.step_s:
            time.sleep(self.step_s)
        outputs = []
        for rid, state in list(self.requests.items()):
            params, emitted = state
            state[1] = emitted + 1
            finished = state[1] >= params.max_tokens
            outputs.append(RequestOutput(rid, [1000 + emitted], finish_reason="length" if finished else None,
                                         num_prompt_tokens=3, num_cached_tokens=self.cached_tokens if emitted == 0 else 0))
            if finished:
                del self.requests[rid]
        return outputs

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.requests), max_model_len=2048)
