"""The `null` backend: no model, deterministic tokens at a set rate.

For gateway, queue and benchmark-harness tests where the model is beside the point. It batches
like a real engine (every running request gets one token per step, at most max_num_seqs run)
and paces steps to `tokens_per_s` per request. Token k of a request is a pure function of its
prompt and k, so a test can predict every token; it never emits an end-of-sequence id unless
`eos_after` asks it to.
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass
from pathlib import Path

from engine.validation import validate_request
from engine.config import EngineConfig
from engine.types import EngineStats, RequestOutput, SamplingParams, TokenLogprob

DEFAULT_VOCAB_SIZE = 49152
DEFAULT_MAX_MODEL_LEN = 8192
FIRST_TOKEN_ID = 32  # below this sit the special tokens of common vocabularies


def null_token(prompt: list[int], index: int, vocab_size: int, eos_ids: frozenset[int]) -> int:
    """The index-th output token the null engine gives this prompt (never an eos id)."""
    span = vocab_size - FIRST_TOKEN_ID
    token = FIRST_TOKEN_ID + (sum(prompt) + 31 * index) % span
    while token in eos_ids:
        token = FIRST_TOKEN_ID + (token - FIRST_TOKEN_ID + 1) % span
    return token


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    produced: int = 0
    first_token_at: float = 0.0  # monotonic time before which it yields nothing (simulated prefill)


class NullEngine:
    """Deterministic fake engine. options: tokens_per_s (per request; 0 = unpaced), ttft_s (delay
    before a request's first token), eos_after (emit eos as token number N, unless ignore_eos)."""

    def __init__(self, config: EngineConfig, tokens_per_s: float = 0.0, ttft_s: float = 0.0, eos_after: int | None = None):
        model = _read_model_config(Path(config.model))
        self.vocab_size = int(model.get("vocab_size", DEFAULT_VOCAB_SIZE))
        self.max_model_len = config.max_model_len or int(model.get("max_position_embeddings", DEFAULT_MAX_MODEL_LEN))
        eos = model.get("eos_token_id", 2)
        self.eos_ids = frozenset(eos if isinstance(eos, list) else [eos])
        self.max_num_seqs = config.max_num_seqs
        self.step_interval = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
        self.ttft_s = ttft_s
        self.eos_after = eos_after
        self._waiting: list[tuple[int, int, _Request]] = []  # heap of (priority, arrival, request)
        self._running: dict[str, _Request] = {}
        self._reports: list[RequestOutput] = []
        self._arrivals = self._steps = self._generated = self._prompt_tokens = 0
        self._next_step_at = 0.0

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        in_use = request_id in self._running or any(r.request_id == request_id for _, _, r in self._waiting)
        validate_request(
            prompt_token_ids, params, vocab_size=self.vocab_size, max_model_len=self.max_model_len,
            id_in_use=request_id if in_use else None,
        )
        heapq.heappush(self._waiting, (params.priority, self._arrivals, _Request(request_id, list(prompt_token_ids), params)))
        self._arrivals += 1

    def abort(self, request_id: str) -> None:
        request = self._running.pop(request_id, None)
        if request is None:
            found = [entry for entry in self._waiting if entry[2].request_id == request_id]
            if not found:
                return
            self._waiting.remove(found[0])
            heapq.heapify(self._waiting)
            request = found[0][2]
        self._reports.append(RequestOutput(request_id, [], finish_reason="abort", num_prompt_tokens=len(request.prompt)))

    def has_unfinished(self) -> bool:
        return bool(self._running or self._waiting or self._reports)

    def step(self) -> list[RequestOutput]:
        outputs, self._reports = self._reports, []
        self._admit()
        if not self._running:
            return outputs
        self._pace()
        self._steps += 1
        now = time.monotonic()
        for request in list(self._running.values()):
            if now >= request.first_token_at:
                outputs.append(self._advance(request))
        return outputs

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self._running), waiting=len(self._waiting), generated_tokens=self._generated,
            prompt_tokens=self._prompt_tokens, steps=self._steps, max_model_len=self.max_model_len,
        )

    # ---- internals ------------------------------------------------------------------------------

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_num_seqs:
            _, _, request = heapq.heappop(self._waiting)
            request.first_token_at = time.monotonic() + self.ttft_s
            self._running[request.request_id] = request
            self._prompt_tokens += len(request.prompt)

    def _pace(self) -> None:
        """Sleep until this step is due: the engine stands in for a forward pass of known length."""
        if not self.step_interval:
            return
        now = time.monotonic()
        if self._next_step_at > now:
            time.sleep(self._next_step_at - now)
        self._next_step_at = max(now, self._next_step_at) + self.step_interval

    def _advance(self, request: _Request) -> RequestOutput:
        params = request.params
        if self.eos_after is not None and request.produced + 1 == self.eos_after and not params.ignore_eos and self.eos_ids:
            token = min(self.eos_ids)
        else:
            token = null_token(request.prompt, request.produced, self.vocab_size, self.eos_ids)
        request.produced += 1
        self._generated += 1
        reason = None
        if token in params.stop_token_ids or (token in self.eos_ids and not params.ignore_eos):
            reason = "stop"
        elif request.produced >= params.max_tokens:
            reason = "length"
        if reason is not None:
            del self._running[request.request_id]
        logprobs = None
        if params.logprobs is not None:
            top = [((token + j) % self.vocab_size, -float(j)) for j in range(params.logprobs)]
            logprobs = [TokenLogprob(token, 0.0, top)]
        return RequestOutput(request.request_id, [token], logprobs, reason, num_prompt_tokens=len(request.prompt))


def _read_model_config(folder: Path) -> dict:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
