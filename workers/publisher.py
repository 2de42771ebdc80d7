"""Everything one engine step tells Redis, sent as one pipelined round trip (two when a request's
first tokens share the step with other requests' tokens: the first tokens go first)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from workers import protocol
from workers.protocol import StreamEvent, WorkerHeartbeat

TERMINAL_EVENTS = ("done", "error")


@dataclass(slots=True)
class Outgoing:
    """What the engine loop gathered since its last flush."""

    events: list[tuple[str, StreamEvent]] = field(default_factory=list)  # (request_id, event), in order
    stream_ttls: dict[str, int] = field(default_factory=dict)  # request_id -> seconds, set with the start event
    leases: list[str] = field(default_factory=list)  # request ids whose lease is (re)set
    checks: list[str] = field(default_factory=list)  # request ids whose client and abort keys are read
    heartbeat: WorkerHeartbeat | None = None

    def __bool__(self) -> bool:
        return bool(self.events or self.leases or self.checks or self.heartbeat)


def first_tokens_first(events: list[tuple[str, StreamEvent]]) -> tuple[list, list]:
    """Splits a flush's events into those of requests whose first tokens are among them (with their
    start events) and the others, each in its original order."""
    starting = {rid for rid, event in events if event.type == "tokens" and event.seq == 1}  # seq 0: start
    if not starting:
        return [], events
    return [e for e in events if e[0] in starting], [e for e in events if e[0] not in starting]


@dataclass(slots=True, frozen=True)
class KeyCheck:
    request_id: str
    client_connected: bool
    abort_requested: bool


class Publisher:
    def __init__(self, client: redis.Redis, worker_id: str) -> None:
        self.client = client
        self.worker_id = worker_id
        self._lease_ms = int(protocol.LEASE_TTL_S * 1000)
        self._heartbeat_ms = int(protocol.HEARTBEAT_TTL_S * 1000)

    def flush(self, out: Outgoing) -> list[KeyCheck]:
        """Send it all. Raises redis.RedisError, leaving in `out` what is still to be sent."""
        # A step's flush carries every running request's tokens (and, at times, their leases and key
        # checks): its round trip took ~0.8 ms at 32 streams against ~0.26 ms for one request's
        # (measured), and a new request's first token waited for all of it.
        first, rest = first_tokens_first(out.events)
        if not first or not (rest or out.leases or out.checks or out.heartbeat):
            return self._send(out)
        self._send(Outgoing(events=first, stream_ttls=out.stream_ttls))
        try:
            return self._send(Outgoing(rest, out.stream_ttls, out.leases, out.checks, out.heartbeat))
        except redis.RedisError:
            out.events = rest  # the first ones are in Redis: sent again, the gateway would see them twice
            raise

    def _send(self, out: Outgoing) -> list[KeyCheck]:
        # In MULTI/EXEC (the same round trip): Redis serves a blocked XREAD after each top-level
        # command, so the gateway's XREAD came back with the first XADD alone (a new request's start
        # event without its first tokens) and needed another round trip for the token.
        pipe = self.client.pipeline(transaction=True)
        for request_id in out.leases:
            pipe.set(protocol.lease_key(request_id), self.worker_id, px=self._lease_ms)
        for request_id, event in out.events:
            key = protocol.stream_key(request_id)
            pipe.xadd(key, {protocol.EVENT_FIELD: protocol.encode(event)},
                      maxlen=protocol.STREAM_MAXLEN, approximate=True)
            if event.type == "start" and request_id in out.stream_ttls:
                # A stream must not outlive its request if nobody ends it (a worker killed mid-stream).
                pipe.expire(key, out.stream_ttls[request_id])
            elif event.type in TERMINAL_EVENTS:
                pipe.expire(key, protocol.STREAM_EXPIRE_S)
                pipe.delete(protocol.lease_key(request_id))
        for request_id in out.checks:
            pipe.exists(protocol.client_key(request_id))
            pipe.exists(protocol.abort_key(request_id))
        if out.heartbeat is not None:
            key = protocol.worker_key(self.worker_id)
            pipe.hset(key, protocol.HEARTBEAT_FIELD, protocol.encode(out.heartbeat))
            pipe.pexpire(key, self._heartbeat_ms)
        replies = pipe.execute()
        return self._key_checks(out, replies)

    @staticmethod
    def _key_checks(out: Outgoing, replies: list) -> list[KeyCheck]:
        if not out.checks:
            return []
        tail = 2 if out.heartbeat is not None else 0
        answers = replies[len(replies) - tail - 2 * len(out.checks) : len(replies) - tail]
        return [
            KeyCheck(request_id, bool(answers[2 * i]), bool(answers[2 * i + 1]))
            for i, request_id in enumerate(out.checks)
        ]

    def publish_now(self, request_id: str, event: StreamEvent) -> None:
        """A terminal event for a job that never reached the engine (expired or aborted at pickup)."""
        self.flush(Outgoing(events=[(request_id, event)]))

    def pick_up(self, request_ids: list[str]) -> list[bool]:
        """Takes the requests' leases before their first engine step, so the gateway can tell a job
        lost with its worker from one still queued; per request, whether an abort was requested already."""
        pipe = self.client.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.set(protocol.lease_key(request_id), self.worker_id, px=self._lease_ms)
            pipe.exists(protocol.abort_key(request_id))
        return [bool(exists) for exists in pipe.execute()[1::2]]

    def remove_heartbeat(self) -> None:
        self.client.delete(protocol.worker_key(self.worker_id))
