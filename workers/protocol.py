"""The wire between gateway and workers: plain msgspec data and Redis key names.

The only module that api/ and workers/ share. Imports nothing of ours.
"""

from __future__ import annotations

import msgspec

PREFIX = "llmq:"
ABORT_CHANNEL = PREFIX + "abort"
LEASE_TTL_S = 3.0  # worker refreshes llmq:lease:<rid> while the request lives in it
CLIENT_TTL_S = 3.0  # gateway refreshes llmq:client:<rid> while the client is connected
HEARTBEAT_TTL_S = 5.0  # llmq:worker:<wid> expires this long after the worker's last beat
STREAM_MAXLEN = 10_000  # events per request stream, approximate cap
STREAM_EXPIRE_S = 60  # a stream lives this long after its terminal event


def queue_name(model: str) -> str:
    return f"llmq.{model}"


def stream_key(request_id: str) -> str:
    return f"{PREFIX}stream:{request_id}"


def lease_key(request_id: str) -> str:
    return f"{PREFIX}lease:{request_id}"


def client_key(request_id: str) -> str:
    return f"{PREFIX}client:{request_id}"


def abort_key(request_id: str) -> str:
    return f"{PREFIX}abort:{request_id}"


def worker_key(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"


WORKER_KEY_PATTERN = PREFIX + "worker:*"


def api_key_key(sha256_hex: str) -> str:
    return f"{PREFIX}key:{sha256_hex}"


class Sampling(msgspec.Struct, frozen=True, kw_only=True):
    """Mirrors engine.types.SamplingParams field for field (the worker converts)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    priority: int = 0


class GenerateJob(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    model: str  # served model name
    prompt_token_ids: list[int]  # for a continuation: original prompt + tokens already streamed
    sampling: Sampling  # for a continuation: max_tokens is what is left
    deadline: float  # unix seconds; past it the worker drops the job
    attempt: int = 0  # 0 for the first dispatch; each continuation adds one
    enqueued_at: float = 0.0


class TokenLogprobWire(msgspec.Struct, array_like=True):
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = []


class StreamEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of llmq:stream:<rid>, msgpack-encoded in the entry's field "e".

    type: "start" | "tokens" | "done" | "error". seq counts events of one attempt from 0;
    the gateway ignores events of attempts it has given up on.
    """

    type: str
    seq: int
    attempt: int = 0
    worker_id: str = ""
    token_ids: list[int] = []
    logprobs: list[TokenLogprobWire] | None = None
    finish_reason: str | None = None  # on "done": stop | length | abort
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    error: str | None = None  # on "error"
    error_code: str | None = None


class WorkerHeartbeat(msgspec.Struct, kw_only=True):
    """Fields of the llmq:worker:<wid> hash (stored msgpack-encoded in field "hb")."""

    worker_id: str
    model: str
    backend: str
    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    tokens_per_s: float = 0.0
    max_model_len: int = 0
    accepting: bool = True  # false while draining
    updated_at: float = 0.0


EVENT_FIELD = b"e"
HEARTBEAT_FIELD = b"hb"

_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(StreamEvent)
_job_decoder = msgspec.msgpack.Decoder(GenerateJob)
_heartbeat_decoder = msgspec.msgpack.Decoder(WorkerHeartbeat)


def encode(obj: msgspec.Struct) -> bytes:
    return _encoder.encode(obj)


def decode_event(raw: bytes) -> StreamEvent:
    return _event_decoder.decode(raw)


def decode_job(raw: bytes) -> GenerateJob:
    return _job_decoder.decode(raw)


def decode_heartbeat(raw: bytes) -> WorkerHeartbeat:
    return _heartbeat_decoder.decode(raw)

GENERATE_TASK = "llmq.generate"  # Celery task name; its one argument is job_to_wire(job)


def job_to_wire(job: GenerateJob) -> dict:
    return msgspec.to_builtins(job)


def job_from_wire(data: dict) -> GenerateJob:
    return msgspec.convert(data, GenerateJob)
