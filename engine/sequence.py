"""One request's state inside the engine, and what the scheduler hands the runner each step.

This is the contract between the scheduler (which owns Sequence and decides what runs)
and the model runner (which reads it and returns sampled tokens). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.types import RequestStatus, SamplingParams

# Stands in seq.token_ids for a token that a step still running on the device has sampled, so the
# scheduler can plan the next step before the host has read it. The runner feeds such a position
# from the device's copy of the sampled ids; the engine writes the real id in when it arrives.
PENDING_TOKEN = -1


@dataclass(slots=True, eq=False)
class Sequence:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: int  # monotonic admission counter: FCFS order among equal priorities
    token_ids: list[int] = field(default_factory=list)  # prompt + output so far
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache (prefix hits included)
    num_cached_tokens: int = 0  # prompt tokens that came from the prefix cache at the first admission
    block_table: list[int] = field(default_factory=list)  # physical KV block ids, in position order
    # Chained prefix-cache hashes of the full blocks of token_ids, memoised by the KV cache manager
    # (a pure function of the tokens, so they stay valid across preemption).
    block_hashes: list[int] = field(default_factory=list)
    error: str | None = None  # why the engine failed this request (status FINISHED_ERROR)

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def has_pending_token(self) -> bool:
        return self.token_ids[-1] == PENDING_TOKEN


@dataclass(slots=True)
class ScheduledChunk:
    """Feed seq.token_ids[start : start + num_tokens] at positions start.. this step."""

    seq: Sequence
    start: int
    num_tokens: int

    @property
    def samples(self) -> bool:
        # Only the chunk that reaches the end of the known tokens produces a new token;
        # earlier prefill chunks only fill the cache.
        return self.start + self.num_tokens == self.seq.num_tokens


@dataclass(slots=True)
class ScheduledBatch:
    chunks: list[ScheduledChunk]  # decodes (num_tokens == 1) first, then prefill chunks

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def is_decode_only(self) -> bool:
        return all(c.num_tokens == 1 for c in self.chunks)


@dataclass(slots=True)
class SampledToken:
    token_id: int
    logprob: "object | None" = None  # engine.types.TokenLogprob when the request asked for logprobs


class ReadyTokens:
    """The handle of a step whose tokens are known already: one that ran to its end, or sampled nothing."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: list[SampledToken]) -> None:
        self.tokens = tokens

    def result(self) -> list[SampledToken]:
        return self.tokens
