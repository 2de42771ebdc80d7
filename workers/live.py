"""One job's life inside a worker: its stream's sequence numbers and the events that say what happened."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import msgspec

from engine.types import RequestOutput, SamplingParams
from workers.protocol import GenerateJob, StreamEvent, TokenLogprobWire

# error_code values of "error" events
DEADLINE_EXCEEDED = "deadline_exceeded"
WORKER_SHUTDOWN = "worker_shutdown"  # the worker drained past its grace period; the job may be continued
ENGINE_ERROR = "engine_error"
INVALID_REQUEST = "invalid_request"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
REDIS_UNAVAILABLE = "redis_unavailable"


def sampling_params(job: GenerateJob) -> SamplingParams:
    # protocol.Sampling mirrors SamplingParams field for field.
    return SamplingParams(**msgspec.structs.asdict(job.sampling))


@dataclass(slots=True, eq=False)
class LiveRequest:
    job: GenerateJob
    worker_id: str
    ended: threading.Event = field(default_factory=threading.Event)  # set once its terminal event is out
    outcome: str = ""  # finish reason or error code, for the log
    seq: int = 0
    in_engine: bool = False
    client_seen: bool = False  # the gateway's client key existed once: its lapse means the client left
    num_cached_tokens: int = 0
    # Gets the first step's cache hits if they come before it goes out (an engine that runs ahead
    # reports them a turn later: then the done event carries them, and the gateway keeps the larger).
    unsent_start: StreamEvent | None = None

    @property
    def request_id(self) -> str:
        return self.job.request_id

    def _event(self, type: str, **fields) -> StreamEvent:
        event = StreamEvent(type=type, seq=self.seq, attempt=self.job.attempt, worker_id=self.worker_id, **fields)
        self.seq += 1
        return event

    def start_event(self) -> StreamEvent:
        self.unsent_start = self._event("start", num_prompt_tokens=len(self.job.prompt_token_ids))
        return self.unsent_start

    def tokens_event(self, output: RequestOutput) -> StreamEvent:
        logprobs = None
        if output.logprobs is not None:
            logprobs = [TokenLogprobWire(lp.token_id, lp.logprob, list(lp.top)) for lp in output.logprobs]
        return self._event("tokens", token_ids=list(output.new_token_ids), logprobs=logprobs)

    def done_event(self, finish_reason: str) -> StreamEvent:
        self.outcome = finish_reason
        return self._event(
            "done",
            finish_reason=finish_reason,
            num_prompt_tokens=len(self.job.prompt_token_ids),
            num_cached_tokens=self.num_cached_tokens,
        )

    def error_event(self, code: str, message: str) -> StreamEvent:
        self.outcome = code
        return self._event("error", error=message, error_code=code)
