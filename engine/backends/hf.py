"""The `hf` baseline: what a plain transformers deployment does, behind the engine interface.

One request at a time through `model.generate`; the rest wait in a queue (priority, then FIFO).
generate runs in a background thread and a streamer hands each new token id to `step()`, the
way TextIteratorStreamer-based servers stream. Sampling is transformers' own (its logits
processors and the global torch RNG, seeded per request when asked).
"""

from __future__ import annotations

import heapq
import queue
import threading
from dataclasses import dataclass, field

from engine.backends.hf_batched import HFBatchedEngine  # noqa: F401 - registered as "hf-batched"
from engine.backends.hf_model import HFBaseline, stop_ids
from engine.backends.queues import drain
from engine.config import EngineConfig
from engine.types import EngineStats, RequestOutput, SamplingParams

# How long one step() waits for the running generate before returning nothing.
STEP_WAIT_S = 1.0


@dataclass(eq=False)
class _Generation:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    events: queue.Queue = field(default_factory=queue.Queue)  # token ids, then one _Finished
    aborted: threading.Event = field(default_factory=threading.Event)
    last_token: int | None = None


@dataclass(frozen=True)
class _Finished:
    error: str | None = None


class HFEngine(HFBaseline):
    """Serial transformers `generate`, one request at a time. See the module docstring.
    Like the torch engine, not thread-safe: one thread drives add_request/abort/step."""

    def __init__(self, config: EngineConfig, **_options) -> None:
        super().__init__(config)
        self._waiting: list[tuple[int, int, _Generation]] = []  # heap of (priority, arrival, request)
        self._arrivals = 0
        self._active: _Generation | None = None
        self._thread: threading.Thread | None = None
        self._reports: list[RequestOutput] = []  # aborts to report at the next step
        self._steps = self._generated = self._prompt_tokens = 0

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._validate(request_id, prompt_token_ids, params, self._in_use(request_id))
        generation = _Generation(request_id, [int(t) for t in prompt_token_ids], params)
        heapq.heappush(self._waiting, (params.priority, self._arrivals, generation))
        self._arrivals += 1

    def abort(self, request_id: str) -> None:
        active = self._active
        if active is not None and active.request_id == request_id and not active.aborted.is_set():
            active.aborted.set()  # generate stops after its current token; step() reaps the thread
            self._reports.append(_aborted(active))
            return
        for index, (_, _, waiting) in enumerate(self._waiting):
            if waiting.request_id == request_id:
                self._waiting.pop(index)
                heapq.heapify(self._waiting)
                self._reports.append(_aborted(waiting))
                return

    def has_unfinished(self) -> bool:
        return bool(self._active or self._waiting or self._reports)

    def step(self) -> list[RequestOutput]:
        outputs, self._reports = self._reports, []
        if self._active is not None and self._active.aborted.is_set():
            self._reap()
        if self._active is None and not self._start_next():
            return outputs
        self._steps += 1
        events = drain(self._active.events, STEP_WAIT_S)
        output = self._to_output(self._active, events)
        if output is not None:
            outputs.append(output)
        return outputs

    def stats(self) -> EngineStats:
        return EngineStats(
            running=int(self._active is not None), waiting=len(self._waiting), generated_tokens=self._generated,
            prompt_tokens=self._prompt_tokens, steps=self._steps, max_model_len=self.max_model_len,
        )

    def close(self) -> None:
        """Stop the running generate (if any) and wait for its thread."""
        if self._active is not None:
            self._active.aborted.set()
            self._reap()

    # ---- internals ------------------------------------------------------------------------------

    def _in_use(self, request_id: str) -> bool:
        live = [g for _, _, g in self._waiting] + ([self._active] if self._active else [])
        return any(g.request_id == request_id for g in live) or any(r.request_id == request_id for r in self._reports)

    def _start_next(self) -> bool:
        if not self._waiting:
            return False
        _, _, generation = heapq.heappop(self._waiting)
        self._active = generation
        self._prompt_tokens += len(generation.prompt)
        self._thread = threading.Thread(target=self._generate, args=(generation,), name="hf-generate", daemon=True)
        self._thread.start()
        return True

    def _reap(self) -> None:
        """Wait for the aborted generate to end; its tokens were already disowned."""
        self._thread.join()
        self._active = self._thread = None

    def _to_output(self, generation: _Generation, events: list) -> RequestOutput | None:
        if generation.aborted.is_set():
            return None  # abort() already reported it
        tokens = [e for e in events if isinstance(e, int)]
        finished = next((e for e in events if isinstance(e, _Finished)), None)
        self._generated += len(tokens)
        if tokens:
            generation.last_token = tokens[-1]
        reason = None
        if finished is not None:
            self._thread.join()
            self._active = self._thread = None
            reason = "error" if finished.error else self._finish_reason(generation)
        if not tokens and reason is None:
            return None
        return RequestOutput(
            generation.request_id, tokens, finish_reason=reason, num_prompt_tokens=len(generation.prompt),
            error=finished.error if finished else None,
        )

    def _finish_reason(self, generation: _Generation) -> str:
        if generation.last_token in stop_ids(generation.params, self.eos_ids):
            return "stop"
        return "length"

    def _generate(self, generation: _Generation) -> None:
        """Runs in the background thread: one `model.generate` call streaming into `events`."""
        try:
            from engine.backends.hf_generate import generate_streaming

            generate_streaming(self.model, generation.prompt, generation.params, stop_ids(generation.params, self.eos_ids),
                               on_token=generation.events.put, should_stop=generation.aborted.is_set)
            generation.events.put(_Finished())
        except Exception as error:  # noqa: BLE001 - reported as this request's error, the engine goes on
            generation.events.put(_Finished(f"generate failed: {type(error).__name__}: {error}"))


def _aborted(generation: _Generation) -> RequestOutput:
    return RequestOutput(generation.request_id, [], finish_reason="abort", num_prompt_tokens=len(generation.prompt))
