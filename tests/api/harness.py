"""Test helpers: the gateway on a real uvicorn in a thread, and a scripted stand-in for a worker
that speaks the wire protocol through Redis (Celery message in, StreamEvents out)."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable

import openai
import redis
import uvicorn

from api.app import create_app
from api.settings import GatewaySettings
from llmq.redis_server import free_port
from workers.protocol import (
    EVENT_FIELD, GENERATE_TASK, HEARTBEAT_FIELD, HEARTBEAT_TTL_S, LEASE_TTL_S, GenerateJob, StreamEvent,
    TokenLogprobWire, WorkerHeartbeat, abort_key, encode, job_from_wire, lease_key, queue_name, stream_key,
    worker_key,
)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)  # polling a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}")


class GatewayServer:
    """create_app(settings) served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "GatewayServer":
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 30, "gateway start")
        assert self.server.started, "gateway failed to start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class FakeWorker:
    """Takes GenerateJobs off the model's Celery queue and answers each with `behaviour(job, self)`."""

    def __init__(self, redis_url: str, model: str, behaviour: Callable[[GenerateJob, "FakeWorker"], None]) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.model = model
        self.behaviour = behaviour
        self.worker_id = uuid.uuid4().hex[:8]
        self.jobs: list[GenerateJob] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._seq: dict[tuple[str, int], int] = {}

    def beat(self) -> None:
        beat = WorkerHeartbeat(worker_id=self.worker_id, model=self.model, backend="fake", updated_at=time.time())
        self.redis.hset(worker_key(self.worker_id), HEARTBEAT_FIELD, encode(beat))
        self.redis.pexpire(worker_key(self.worker_id), int(HEARTBEAT_TTL_S * 1000))

    def __enter__(self) -> "FakeWorker":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.redis.delete(worker_key(self.worker_id))
        except redis.ConnectionError:
            pass  # a test stopped Redis on purpose

    def _loop(self) -> None:
        try:
            self._serve()
        except redis.ConnectionError:
            pass  # a test stopped Redis on purpose

    def _serve(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_beat > 1.0:
                self.beat()
                last_beat = time.monotonic()
            popped = self.redis.brpop([queue_name(self.model)], timeout=0.1)
            if not popped:
                continue
            message = json.loads(popped[1])
            assert message["headers"]["task"] == GENERATE_TASK
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            job = job_from_wire(args[0])
            self.jobs.append(job)
            self.behaviour(job, self)

    # ---- the protocol, as a worker writes it -------------------------------------------------

    def emit(self, job: GenerateJob, type: str, **fields) -> None:
        key = (job.request_id, job.attempt)
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        event = StreamEvent(type=type, seq=seq, attempt=job.attempt, worker_id=self.worker_id, **fields)
        self.redis.xadd(stream_key(job.request_id), {EVENT_FIELD: encode(event)})

    def hold_lease(self, job: GenerateJob) -> None:
        self.redis.set(lease_key(job.request_id), self.worker_id, px=int(LEASE_TTL_S * 1000))

    def aborted(self, job: GenerateJob) -> bool:
        return bool(self.redis.exists(abort_key(job.request_id)))

    def generate(self, job: GenerateJob, token_ids: list[int], per_event: int = 1, logprobs: bool = False,
                 finish: str | None = None) -> None:
        """start, tokens (at most max_tokens), done: the happy path of one attempt."""
        self.hold_lease(job)
        self.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
        ids = token_ids[: job.sampling.max_tokens]
        for i in range(0, len(ids), per_event):
            part = ids[i : i + per_event]
            wire = [TokenLogprobWire(t, -0.5, [(t, -0.5), (t + 1, -1.5)]) for t in part] if logprobs else None
            self.emit(job, "tokens", token_ids=part, logprobs=wire)
        reason = finish or ("length" if len(token_ids) >= job.sampling.max_tokens else "stop")
        self.emit(job, "done", finish_reason=reason)
        self.redis.delete(lease_key(job.request_id))


def client_for(server: GatewayServer, **options) -> openai.OpenAI:
    """The real OpenAI client against a test gateway, without its own retries."""
    options.setdefault("timeout", 30.0)  # a hung request fails the test instead of stalling the suite
    return openai.OpenAI(base_url=server.url + "/v1", api_key=options.pop("api_key", "none"), max_retries=0,
                         **options)
