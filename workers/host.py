"""EngineHost: the one thread that owns the engine. Other threads (Celery's task threads, the abort
listener, signal handlers) only put messages in its inbox; each loop turn takes them, runs one
engine step and tells Redis everything in one pipelined round trip (new requests' first tokens
in one of their own, first: workers/publisher.py)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Callable

import redis

from engine.errors import ContextLengthError, InvalidRequestError
from engine.interface import EngineProtocol
from engine.types import RequestOutput
from workers import live as codes
from workers import protocol
from workers.aborts import AbortListener
from workers.heartbeat import Heartbeats
from workers.live import LiveRequest, sampling_params
from workers.protocol import GenerateJob
from workers.publisher import Outgoing, Publisher

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25  # an idle loop still wakes this often for heartbeats and key checks
CHECK_INTERVAL_S = 0.25  # client, abort and deadline checks of live requests
LEASE_REFRESH_S = protocol.LEASE_TTL_S / 3
OUTAGE_RETRY_S = 0.2  # pause between attempts to reach Redis while it is away
REMEMBERED_ABORTS = 4096  # aborts of requests not (yet) here: a job picked up after its abort ends at once
LATE_PICKUP_ROUNDS = 3  # extra inbox reads before a step, for jobs that came during the last pickup
WEDGED_LOOP_GRACE_S = 30.0  # a task thread gives up on its request this long after the deadline
# How long, at most, the thread that hands a job to an idle loop waits for the loop's turn with
# that job (pickup, the step that starts it, the flush) before it goes on with Celery's handling of
# the message. Both threads want the interpreter lock: the loop, woken by the job, waited ~0.7 ms
# behind Celery's Python code, and as long again for the lock when its pickup round trip came
# back (measured at one stream). The wait ends with that turn, not with the job's first tokens: on
# a GPU engine that runs ahead, they come a whole forward pass later, and jobs queued behind this
# one in Redis wait for the hand-over to end.
IDLE_HANDOVER_WAIT_S = 0.005


class Draining(Exception):
    """The worker is shutting down and takes no new jobs."""


class EngineHost:
    def __init__(self, engine: EngineProtocol, publisher: Publisher, *, model: str, backend: str,
                 on_load: Callable[[int, int], None] | None = None) -> None:
        self.engine = engine
        self.publisher = publisher
        self.worker_id = publisher.worker_id
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._live: dict[str, LiveRequest] = {}
        # (request id, attempt) -> a job handed to the loop at message receipt, before its task ran
        self._started_early: dict[tuple[str, int], LiveRequest] = {}
        self._aborted_elsewhere: OrderedDict[str, None] = OrderedDict()
        self._out = Outgoing()  # events wait here until Redis has them
        self._ending: list[LiveRequest] = []  # released once their terminal events are sent
        self._accepting = True
        self._drain_deadline: float | None = None
        self._stopping = False
        self._idle = False  # the loop waits for work, with nothing in the engine
        self._handing_over: dict[str, threading.Event] = {}  # request id -> set when its first turn ends
        self._outage_since: float | None = None
        self._step_failed = False
        self._last_checks = self._last_leases = 0.0
        self._heartbeats = Heartbeats(self.worker_id, model, backend)
        self._on_load = on_load  # (engine waiting, jobs held), whenever either changes
        self._last_load: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._run, name="llmq-engine", daemon=True)
        self._aborts = AbortListener(publisher.client, self.abort)

    # ---- called from other threads -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._aborts.start()

    @property
    def accepting(self) -> bool:
        return self._accepting

    def start_early(self, job: GenerateJob, yield_to_idle_loop: bool = False) -> None:
        """Hands the job to the loop ahead of run_job (which then only waits for it), unless this
        worker is draining or the job is past its deadline: run_job answers those. With
        yield_to_idle_loop, if the loop was idle, returns once the loop's turn with the job has ended
        (its first step launched, what it produced sent), or after IDLE_HANDOVER_WAIT_S, so the
        caller's own work does not hold the loop back."""
        if not self._accepting or 0 < job.deadline <= time.time():
            return
        if (job.request_id, job.attempt) in self._started_early:
            return  # the transport handed it over already; this is Celery's task_received
        request = LiveRequest(job, self.worker_id)
        self._started_early[(job.request_id, job.attempt)] = request
        turn_done = None
        if yield_to_idle_loop and self._idle:
            turn_done = self._handing_over[job.request_id] = threading.Event()
        self._inbox.put(("add", request))
        if turn_done is not None and not turn_done.wait(IDLE_HANDOVER_WAIT_S):
            self._handing_over.pop(job.request_id, None)

    def run_job(self, job: GenerateJob) -> str:
        """Run one job to its end; returns its finish reason or error code. Raises Draining."""
        now = time.time()
        request = self._started_early.pop((job.request_id, job.attempt), None)
        if request is None:
            if not self._accepting:
                raise Draining()
            request = LiveRequest(job, self.worker_id)
            if 0 < job.deadline <= now:
                return self._end_unstarted(request, request.error_event(codes.DEADLINE_EXCEEDED, "deadline passed in the queue"))
            # The loop leases it and checks for an abort in one round trip for all the jobs that
            # arrived together, before the engine sees them.
            self._inbox.put(("add", request))
        timeout = max(job.deadline - now, 0.0) + WEDGED_LOOP_GRACE_S if job.deadline > 0 else None
        if not request.ended.wait(timeout):
            log.error("request %s outlived its deadline in the engine loop", job.request_id)
            self.abort(job.request_id)
        return request.outcome

    def end_expired(self, job: GenerateJob) -> None:
        """A job Celery dropped as expired still gets its terminal event."""
        if self._started_early.pop((job.request_id, job.attempt), None) is not None:
            return  # it runs already; the loop ends it at its deadline
        request = LiveRequest(job, self.worker_id)
        self._end_unstarted(request, request.error_event(codes.DEADLINE_EXCEEDED, "deadline passed in the queue"))

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    def drain(self, grace_s: float) -> None:
        """Take no new jobs; running ones get grace_s to finish, then end with an error event."""
        self._accepting = False
        self._inbox.put(("drain", grace_s))

    def stop(self, timeout: float = 10.0) -> None:
        self._inbox.put(("stop", None))
        self._thread.join(timeout)
        self._aborts.stop()

    def _end_unstarted(self, request: LiveRequest, event) -> str:
        try:
            self.publisher.publish_now(request.request_id, event)
        except redis.RedisError as exc:
            log.warning("could not publish the end of %s: %s", request.request_id, exc)
        return request.outcome

    # ---- the engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        # On stop, the last events go out unless Redis is away (then nobody is listening).
        while not (self._stopping and not self._live and (not self._out.events or self._outage_since)):
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - a bug here must not strand every request of the worker
                log.exception("engine loop turn failed")
                time.sleep(OUTAGE_RETRY_S)  # no hot loop if it keeps failing
        try:
            self.publisher.remove_heartbeat()
        except redis.RedisError:
            pass

    def _turn(self) -> None:
        wait = self._wait_time()
        self._idle = wait == IDLE_WAIT_S
        self._take_inbox(wait)
        self._idle = False
        # Jobs that arrived during that pickup's round trip would wait a whole engine step for the
        # next turn: take them now, while each round brings some (bounded, so arrivals cannot hold
        # the step back).
        for _ in range(LATE_PICKUP_ROUNDS):
            if self._inbox.empty():
                break
            self._take_inbox(0.0)
        now = time.time()
        if now - self._last_checks >= CHECK_INTERVAL_S:
            self._end_overdue(now)
        if self._outage_since is None and self._has_engine_work():
            self._collect(self._step())
        self._flush(now)
        if self._handing_over:  # the jobs handed over while the loop was idle had this turn
            for rid in list(self._handing_over):
                event = self._handing_over.pop(rid, None)
                if event is not None:
                    event.set()

    def _wait_time(self) -> float:
        if self._outage_since is not None:
            return OUTAGE_RETRY_S
        if self._out.events or self._has_engine_work():
            return 0.0
        return IDLE_WAIT_S

    def _has_engine_work(self) -> bool:
        if any(request.in_engine for request in self._live.values()):
            return True
        return not self._step_failed and self.engine.has_unfinished()

    def _take_inbox(self, wait: float) -> None:
        try:
            message = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        arrived: list[LiveRequest] = []
        while True:
            if message[0] == "add":
                arrived.append(message[1])
            else:
                self._pick_up(arrived)  # an abort or a stop after an add applies to it
                arrived = []
                self._handle(*message)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                break
        self._pick_up(arrived)

    def _pick_up(self, arrived: list[LiveRequest]) -> None:
        """Leases the new jobs (so the gateway can tell one lost with this worker from one still
        queued) and adds them to the engine, but for those aborted before they got here."""
        if not arrived:
            return
        aborted = [False] * len(arrived)  # unless Redis says otherwise; the periodic checks look again
        if self._outage_since is None:
            try:
                aborted = self.publisher.pick_up([request.request_id for request in arrived])
            except redis.RedisError:
                pass
        for request, was_aborted in zip(arrived, aborted):
            if was_aborted:
                self._end(request, request.done_event("abort"))
            else:
                self._add(request)

    def _handle(self, kind: str, value) -> None:
        if kind == "abort":
            request = self._live.get(value)
            if request is not None:
                self._end(request, request.done_event("abort"))
            else:
                self._aborted_elsewhere[value] = None
                while len(self._aborted_elsewhere) > REMEMBERED_ABORTS:
                    self._aborted_elsewhere.popitem(last=False)
        elif kind == "drain":
            self._accepting = False
            self._drain_deadline = time.time() + value
        elif kind == "stop":
            self._stopping = True
            self._accepting = False
            for request in list(self._live.values()):
                self._end(request, request.error_event(codes.WORKER_SHUTDOWN, "worker stopped"))

    def _add(self, request: LiveRequest) -> None:
        rid = request.request_id
        if self._aborted_elsewhere.pop(rid, "absent") is None:
            self._end(request, request.done_event("abort"))
            return
        self._live[rid] = request
        try:
            self.engine.add_request(rid, request.job.prompt_token_ids, sampling_params(request.job))
        except ContextLengthError as exc:
            self._end(request, request.error_event(codes.CONTEXT_LENGTH_EXCEEDED, str(exc)))
            return
        except InvalidRequestError as exc:
            self._end(request, request.error_event(codes.INVALID_REQUEST, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - an engine bug must not kill the loop
            log.exception("engine refused %s", rid)
            self._end(request, request.error_event(codes.ENGINE_ERROR, f"engine error: {exc}"))
            return
        request.in_engine = True
        self._step_failed = False
        self._out.events.append((rid, request.start_event()))
        if request.job.deadline > 0:
            self._out.stream_ttls[rid] = int(max(request.job.deadline - time.time(), 0)) + protocol.STREAM_EXPIRE_S

    def _end(self, request: LiveRequest, event) -> None:
        """Send the request's terminal event and forget it; the engine drops it if it still runs it."""
        rid = request.request_id
        self._live.pop(rid, None)
        if request.in_engine:
            try:
                self.engine.abort(rid)
            except Exception:  # noqa: BLE001
                log.exception("engine.abort(%s) failed", rid)
        self._out.events.append((rid, event))
        self._ending.append(request)

    def _step(self) -> list[RequestOutput]:
        try:
            return self.engine.step()
        except Exception as exc:  # noqa: BLE001 - which request broke is unknown: end them all
            log.exception("engine step failed")
            self._step_failed = True
            for request in [r for r in self._live.values() if r.in_engine]:
                self._end(request, request.error_event(codes.ENGINE_ERROR, f"engine error: {exc}"))
            return []

    def _collect(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            request = self._live.get(output.request_id)
            if request is None:  # already ended here (aborted, overdue)
                continue
            if output.num_cached_tokens:
                request.num_cached_tokens = output.num_cached_tokens
                if request.unsent_start is not None:
                    request.unsent_start.num_cached_tokens = output.num_cached_tokens
            if output.new_token_ids:
                self._heartbeats.count_tokens(len(output.new_token_ids))
                self._out.events.append((request.request_id, request.tokens_event(output)))
            if output.finish_reason == "error":
                request.in_engine = False
                self._end(request, request.error_event(codes.ENGINE_ERROR, output.error or "engine error"))
            elif output.finish_reason:
                request.in_engine = False
                self._end(request, request.done_event(output.finish_reason))

    def _end_overdue(self, now: float) -> None:
        drained = self._drain_deadline is not None and now >= self._drain_deadline
        for request in list(self._live.values()):
            if drained:
                self._end(request, request.error_event(codes.WORKER_SHUTDOWN, "worker shut down before the request ended"))
            elif 0 < request.job.deadline <= now:
                self._end(request, request.error_event(codes.DEADLINE_EXCEEDED, "request deadline passed"))

    def _flush(self, now: float) -> None:
        out = self._out
        if now - self._last_leases >= LEASE_REFRESH_S:
            out.leases = [rid for rid, request in self._live.items() if request.in_engine]
            self._last_leases = now
        if now - self._last_checks >= CHECK_INTERVAL_S:
            out.checks = list(self._live)
            self._last_checks = now
        stats = self.engine.stats()
        out.heartbeat = self._heartbeats.due(stats, self._accepting, now)
        load = (stats.waiting, len(self._live))
        if self._on_load is not None and load != self._last_load:
            self._last_load = load
            try:
                self._on_load(*load)
            except Exception:  # noqa: BLE001 - intake control must not stop the engine
                log.exception("on_load callback failed")
        if not out:
            return
        try:
            checks = self.publisher.flush(out)
        except redis.RedisError as exc:
            self._on_outage(now, exc)
            return
        if self._outage_since is not None:
            log.warning("Redis is back after %.1f s", now - self._outage_since)
            self._outage_since = None
        for rid, event in out.events:
            if event.type == "start" and rid in self._live:
                self._live[rid].unsent_start = None
        self._out = Outgoing()
        for request in self._ending:
            request.ended.set()
        self._ending = []
        for check in checks:
            self._apply_check(check)

    def _apply_check(self, check) -> None:
        request = self._live.get(check.request_id)
        if request is None:
            return
        if check.abort_requested or (request.client_seen and not check.client_connected):
            self._end(request, request.done_event("abort"))
        elif check.client_connected:
            request.client_seen = True

    def _on_outage(self, now: float, exc: Exception) -> None:
        self._out.leases, self._out.checks, self._out.heartbeat = [], [], None
        if self._outage_since is None:
            log.warning("Redis unreachable (%s); holding %d events", exc, len(self._out.events))
            self._outage_since = now
            self._heartbeats.forget()
        if now - self._outage_since < protocol.LEASE_TTL_S:
            return
        # Our leases have lapsed: the gateway has given these requests up (or re-dispatched them).
        for request in list(self._live.values()):
            self._end(request, request.error_event(codes.REDIS_UNAVAILABLE, "lost Redis mid-request"))
        self._out.events = [(rid, e) for rid, e in self._out.events if e.type in ("done", "error")]
        for request in self._ending:
            request.ended.set()
        self._ending = []
