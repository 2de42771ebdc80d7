"""The `torch` backend's engine: scheduler + model runner behind EngineProtocol."""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.scheduler import Scheduler
from engine.sequence import ReadyTokens, ScheduledBatch, Sequence
from engine.types import EngineStats, RequestOutput, RequestStatus, SamplingParams
from engine.validation import validate_request

log = logging.getLogger(__name__)


class Engine:
    """Continuous batching over a model runner.

    The runner contract: attributes `num_kv_blocks`, `block_size`, `max_model_len`, `vocab_size`,
    `eos_token_ids`, `kv_cache_bytes`; `execute(batch) -> list[SampledToken]`, one per chunk whose
    `samples` is True, in chunk order; optionally `release(request_id)` to drop per-request state,
    `launch(batch)` returning a handle whose `result()` is execute's list (the step runs on the
    device meanwhile), and `asynchronous` (True when launch returns before the device is done).
    When the engine runs ahead, a chunk's last token may be PENDING_TOKEN: the runner feeds that
    position the id it sampled for the request in the launch just before (at most one launch is
    unread when the next one starts).
    A stop token (eos or `stop_token_ids`) is returned in `new_token_ids` like any other token.
    Not thread-safe: one thread drives add_request/abort/step.

    Running ahead (config.async_scheduling): step() plans and launches step N+1 before it reads
    step N's sampled ids back, so the device does not wait for the host's bookkeeping, nor for
    the caller's work between steps. N+1 feeds each request the id N sampled straight from the
    device (a PENDING_TOKEN on the host until N is read). step() then returns N's tokens. The
    cost: a request that stops on a sampled stop token has run one step too many (the token that
    step sampled after the stop is dropped). Requests with penalties need their whole output on
    the host, so while one is live each step first reads the one before. A request's KV blocks may
    return to the pool while a launched step still writes them: the device runs steps in launch
    order (one stream), so a later step that takes them over writes after it.
    """

    def __init__(self, config: EngineConfig, runner=None) -> None:
        if runner is None:
            from engine.runner import ModelRunner  # torch and the weights load only here

            runner = ModelRunner(config)
        self.config = config
        self.runner = runner
        self.vocab_size = runner.vocab_size
        # A request alone must always fit the KV pool, so the pool caps the context too.
        limits = (runner.max_model_len, config.max_model_len, runner.num_kv_blocks * runner.block_size)
        self.max_model_len = min(limit for limit in limits if limit is not None)
        self.scheduler = Scheduler(
            config,
            runner.num_kv_blocks,
            self.max_model_len,
            block_size=runner.block_size,
            eos_token_ids=tuple(runner.eos_token_ids),
        )
        self._live: dict[str, Sequence] = {}
        self._reports: list[RequestOutput] = []  # aborts, reported by the next step
        self._in_flight: list[_Launched] = []  # launched steps whose ids are not read yet, oldest first
        self._launch = getattr(runner, "launch", None)
        mode = config.async_scheduling
        self._runs_ahead = mode == "on" or (mode == "auto" and bool(getattr(runner, "asynchronous", False)))
        self._need_history: set[str] = set()  # live requests whose sampling reads their output so far
        self._arrivals = 0
        self._steps = 0
        self._generated_tokens = 0
        self._prompt_tokens = 0

    # ---- requests -------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._validate(request_id, prompt_token_ids, params)
        prompt = [operator.index(t) for t in prompt_token_ids]
        seq = Sequence(request_id, prompt, params, arrival=self._arrivals)
        self._arrivals += 1
        self._live[request_id] = seq
        if params.has_penalties:  # computed from the request's tokens on the host, pending ones included
            self._need_history.add(request_id)
        self.scheduler.add(seq)

    def _validate(self, request_id: str, prompt: list[int], params: SamplingParams) -> None:
        in_use = request_id in self._live or any(r.request_id == request_id for r in self._reports)
        validate_request(prompt, params, vocab_size=self.vocab_size, max_model_len=self.max_model_len,
                         id_in_use=request_id if in_use else None)

    def abort(self, request_id: str) -> None:
        seq = self.scheduler.abort(request_id)
        if seq is not None:
            self._retire(seq)
            self._reports.append(self._output(seq, [], None))

    def has_unfinished(self) -> bool:
        return bool(self._live or self._reports or self._in_flight)

    # ---- the loop -------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        outputs, self._reports = self._reports, []
        if self._in_flight and self._need_history:
            outputs += self._read_oldest()  # the next step's sampling needs every id on the host
        batch = self.scheduler.schedule()
        outputs += [self._retired_output(seq) for seq in self.scheduler.take_failed()]
        launched = None
        if batch.chunks:
            launched, failed = self._start(batch)
            outputs += failed
            if launched is not None:
                self._in_flight.append(launched)
        # Running ahead leaves the step just launched unread; every older one is read now.
        while len(self._in_flight) > (1 if self._runs_ahead and launched is not None else 0):
            outputs += self._read_oldest()
        return outputs

    def _read_oldest(self) -> list[RequestOutput]:
        # Dropped from the list only once read: if anything raises first, the next step reads it.
        outputs = self._read(self._in_flight[0])
        self._in_flight.pop(0)
        return outputs

    def _start(self, batch: ScheduledBatch) -> tuple[_Launched | None, list[RequestOutput]]:
        self._steps += 1
        samples = [chunk.samples for chunk in batch.chunks]  # before advance() appends pending ids
        try:
            handle = self._launch(batch) if self._launch is not None else ReadyTokens(self.runner.execute(batch))
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the engine
            log.exception("model step failed; failing its %d requests", len(batch.chunks))
            return None, self._fail_batch(batch, f"model step failed: {type(exc).__name__}: {exc}")
        self._prompt_tokens += sum(_prompt_part(c.seq, c.start, c.num_tokens) for c in batch.chunks)
        self.scheduler.advance(batch, samples)
        return _Launched(batch, samples, handle), []

    def _read(self, launched: _Launched) -> list[RequestOutput]:
        batch = launched.batch
        try:
            sampled = launched.handle.result()
            expected = sum(launched.samples)
            if len(sampled) != expected:
                raise RuntimeError(f"runner returned {len(sampled)} tokens for {expected} sampling chunks")
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the engine
            log.exception("model step failed; failing its %d requests", len(batch.chunks))
            return self._fail_batch(batch, f"model step failed: {type(exc).__name__}: {exc}")
        taken = self.scheduler.update(batch, launched.samples, sampled)
        self._generated_tokens += len(taken)
        outputs = []
        for seq, token in taken:
            if seq.status.finished:
                self._retire(seq)
            logprobs = [token.logprob] if seq.params.logprobs is not None else None
            outputs.append(self._output(seq, [token.token_id], logprobs))
        return outputs

    def _fail_batch(self, batch: ScheduledBatch, error: str) -> list[RequestOutput]:
        outputs = []
        for chunk in batch.chunks:
            seq = chunk.seq
            if seq.status.finished:
                continue
            self.scheduler.finish(seq, RequestStatus.FINISHED_ERROR, error)
            outputs.append(self._retired_output(seq))
        return outputs

    def _retired_output(self, seq: Sequence) -> RequestOutput:
        self._retire(seq)
        return self._output(seq, [], None)

    def _retire(self, seq: Sequence) -> None:
        self._live.pop(seq.request_id, None)
        self._need_history.discard(seq.request_id)
        release = getattr(self.runner, "release", None)
        if release is None:
            return
        try:
            release(seq.request_id)
        except Exception:  # noqa: BLE001 - a runner's bookkeeping error must not stop the engine
            log.exception("runner.release(%s) failed", seq.request_id)

    @staticmethod
    def _output(seq: Sequence, token_ids: list[int], logprobs) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=seq.status.finish_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            error=seq.error,
        )

    # ---- stats ----------------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        kv = self.scheduler.kv
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_blocks_used=kv.num_used_blocks,
            kv_blocks_total=kv.num_blocks,
            kv_block_size=kv.block_size,
            prefix_cache_queries=kv.prefix_cache_queries,
            prefix_cache_hits=kv.prefix_cache_hits,
            preemptions=self.scheduler.num_preemptions,
            generated_tokens=self._generated_tokens,
            prompt_tokens=self._prompt_tokens,
            steps=self._steps,
            kv_cache_bytes=self.runner.kv_cache_bytes,
            max_model_len=self.max_model_len,
        )


@dataclass(slots=True)
class _Launched:
    batch: ScheduledBatch
    samples: list[bool]  # which chunks sample, as it was at the launch
    handle: object  # result() -> list[SampledToken]


def _prompt_part(seq: Sequence, start: int, num_tokens: int) -> int:
    """How many of the chunk's tokens are prompt tokens (recomputed output tokens are not)."""
    return max(0, min(start + num_tokens, seq.num_prompt_tokens) - start)
