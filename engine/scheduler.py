"""In-flight batching at token granularity: which tokens of which requests run this step.

The scheduler speaks tokens, not phases: a prefill chunk, a prefix-cache hit, a decode and a
recompute after preemption are all "feed tokens [start, start + n) of this sequence".
"""

from __future__ import annotations

import bisect

from engine.config import EngineConfig
from engine.kv_cache import KVCacheManager
from engine.sequence import PENDING_TOKEN, SampledToken, ScheduledBatch, ScheduledChunk, Sequence
from engine.types import RequestStatus


def _order(seq: Sequence) -> tuple[int, int]:
    """Who goes first: lower priority value, then earlier arrival."""
    return (seq.params.priority, seq.arrival)


class Scheduler:
    """Owns the waiting and running sequences and the KV block manager.

    Each step, `schedule()` gives every running decode its token first, then continues chunked
    prefills, then admits waiting requests, all under `max_num_batched_tokens`. When KV blocks run
    out, the newest running request is preempted: its blocks go back to the pool and it waits again
    with all its tokens, to be recomputed (partly from the prefix cache) when there is room.

    A step's results come in two halves, so the next step can be planned while this one runs:
    `advance(batch, samples)` when it is launched (its tokens count as computed, each sampled token
    is a PENDING_TOKEN), `update(batch, samples, sampled)` when its ids are read back.
    """

    def __init__(
        self,
        config: EngineConfig,
        num_blocks: int,
        max_model_len: int,
        *,
        block_size: int | None = None,
        eos_token_ids: tuple[int, ...] = (),
    ) -> None:
        self.kv = KVCacheManager(num_blocks, block_size or config.block_size, config.enable_prefix_caching)
        self.max_model_len = max_model_len
        self.max_num_batched_tokens = config.max_num_batched_tokens
        # Never run more requests than one step can decode, so no running request ever skips a step.
        self.max_num_seqs = min(config.max_num_seqs, config.max_num_batched_tokens)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.waiting: list[Sequence] = []  # sorted by _order
        self.running: list[Sequence] = []
        self._failed: list[Sequence] = []  # failed inside schedule(), not yet reported
        self.num_preemptions = 0

    # ---- queue ----------------------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        seq.status = RequestStatus.WAITING
        bisect.insort(self.waiting, seq, key=_order)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self._failed)

    def abort(self, request_id: str) -> Sequence | None:
        """Finish a live request as aborted and free its blocks; None if it is not live."""
        for seq in (*self.running, *self.waiting):
            if seq.request_id == request_id:
                self.finish(seq, RequestStatus.FINISHED_ABORTED)
                return seq
        return None

    def finish(self, seq: Sequence, status: RequestStatus, error: str | None = None) -> None:
        """Take seq out of the queues with a finished status; its blocks go back to the pool."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.kv.free(seq)
        seq.status = status
        seq.error = error

    def take_failed(self) -> list[Sequence]:
        """Requests that schedule() had to fail (they can never fit the KV cache), once each."""
        failed, self._failed = self._failed, []
        return failed

    # ---- one step -------------------------------------------------------------------------------

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        chunks: list[ScheduledChunk] = []
        scheduled: set[int] = set()  # id() of sequences with a chunk this step
        preemptions_before = self.num_preemptions

        self.running.sort(key=_order)
        # A request whose token still in flight is its last (by length) has nothing more to run.
        pending = [(seq, len(seq.token_ids) - seq.num_computed_tokens) for seq in self.running
                   if not self._ends_in_flight(seq)]
        decodes = [entry for entry in pending if entry[1] == 1]
        prefills = [entry for entry in pending if entry[1] > 1]
        for seq, num_pending in decodes + prefills:  # decodes first: a long prompt never stalls running streams
            if budget == 0:
                break
            if seq.status != RequestStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_tokens = min(num_pending, budget)
            if self._make_room(seq, num_tokens, scheduled):
                chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, num_tokens))
                scheduled.add(id(seq))
                budget -= num_tokens

        # Admitting right after a preemption would only trade one request's blocks for another's.
        if self.num_preemptions == preemptions_before:
            chunks += self._admit_waiting(budget)
        # The batch contract: single-token chunks (decodes) first. A new admission may have one
        # token left after its prefix hit; the stable sort moves it up and keeps the rest in order.
        chunks.sort(key=lambda chunk: chunk.num_tokens != 1)
        return ScheduledBatch(chunks)

    def _make_room(self, seq: Sequence, num_tokens: int, scheduled: set[int]) -> bool:
        """Reserve blocks for num_tokens more tokens of a running seq, preempting newer requests
        that have no chunk yet this step. False if seq itself had to give way (or fail)."""
        while not self.kv.can_allocate(seq, num_tokens):
            # Not one whose last token is in flight: it ends when that token is read, and its
            # blocks return then; preempted now, its whole recompute would be thrown away.
            victim = max((s for s in self.running if id(s) not in scheduled and not self._ends_in_flight(s)), key=_order)
            if victim is not seq:
                self._preempt(victim)
            elif len(self.running) == 1:  # alone with the whole pool and still short
                self._fail(seq, f"request needs more than the KV cache's {self._capacity()} tokens")
                return False
            else:
                self._preempt(seq)
                return False
        self.kv.allocate(seq, num_tokens)
        return True

    def _admit_waiting(self, budget: int) -> list[ScheduledChunk]:
        chunks = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if self.kv.blocks_for(seq.num_tokens) > self.kv.num_blocks:
                self._fail(seq, f"{seq.num_tokens} tokens do not fit the KV cache's {self._capacity()} tokens")
                continue
            num_cached = self.kv.num_cached_prefix_tokens(seq)
            num_tokens = min(seq.num_tokens - num_cached, budget)
            # Strict order: if the head does not fit, nobody behind it jumps the queue (no starvation).
            if not self.kv.can_allocate(seq, num_tokens):
                break
            self.waiting.pop(0)
            self.kv.allocate(seq, num_tokens)  # takes the cached prefix: num_computed_tokens = num_cached
            if seq.status == RequestStatus.WAITING:  # first admission; a recompute's hits are its own blocks
                seq.num_cached_tokens = min(seq.num_computed_tokens, seq.num_prompt_tokens)
            seq.status = RequestStatus.RUNNING
            self.running.append(seq)
            chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, num_tokens))
            budget -= num_tokens
        return chunks

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        if seq.has_pending_token:  # dropped unread: the recompute samples that position again
            seq.token_ids.pop()
        seq.num_computed_tokens = 0  # recompute prompt + output so far; the prefix cache may serve part
        self.num_preemptions += 1
        self.add(seq)
        seq.status = RequestStatus.PREEMPTED

    def _fail(self, seq: Sequence, error: str) -> None:
        self.finish(seq, RequestStatus.FINISHED_ERROR, error)
        self._failed.append(seq)

    def _capacity(self) -> int:
        return self.kv.num_blocks * self.kv.block_size

    # ---- results --------------------------------------------------------------------------------

    def advance(self, batch: ScheduledBatch, samples: list[bool]) -> None:
        """The batch was launched: its tokens count as computed, and each chunk that samples
        (samples[i], read before this call) holds a PENDING_TOKEN until update() gets the id."""
        for chunk, sampling in zip(batch.chunks, samples):
            chunk.seq.num_computed_tokens += chunk.num_tokens
            if sampling:
                chunk.seq.token_ids.append(PENDING_TOKEN)

    def update(
        self, batch: ScheduledBatch, samples: list[bool], sampled: list[SampledToken]
    ) -> list[tuple[Sequence, SampledToken]]:
        """The advanced batch's sampled ids arrived (one per chunk with samples[i], in chunk order).
        Returns the (sequence, token) pairs taken: not those of requests that were aborted or
        preempted meanwhile. A sequence that finished with its token is out of `running`."""
        tokens = iter(sampled)
        taken = []
        for chunk, sampling in zip(batch.chunks, samples):
            seq = chunk.seq
            token = next(tokens) if sampling else None
            if seq.status != RequestStatus.RUNNING:  # aborted, preempted or failed since the launch
                continue
            if token is not None:
                index = chunk.start + chunk.num_tokens  # where advance() put the pending token
                seq.token_ids[index] = token.token_id
                taken.append((seq, token))
            # Only now are the full blocks' tokens all known (a later pending one is never in them).
            self.kv.cache_full_blocks(seq)
            if token is not None:
                status = self._stop_status(seq, token.token_id, index + 1)
                if status is not None:
                    self.finish(seq, status)
        return taken

    def _stop_status(self, seq: Sequence, token_id: int, num_tokens: int) -> RequestStatus | None:
        """How seq ends with token_id as its num_tokens-th token, or None if it goes on."""
        params = seq.params
        if (token_id in self.eos_token_ids and not params.ignore_eos) or token_id in params.stop_token_ids:
            return RequestStatus.FINISHED_STOPPED
        if self._length_reached(seq, num_tokens):
            return RequestStatus.FINISHED_LENGTH
        return None

    def _ends_in_flight(self, seq: Sequence) -> bool:
        """Its token in flight is its last by length."""
        return seq.has_pending_token and self._length_reached(seq, len(seq.token_ids))

    def _length_reached(self, seq: Sequence, num_tokens: int) -> bool:
        return num_tokens - seq.num_prompt_tokens >= seq.params.max_tokens or num_tokens >= self.max_model_len
