"""The publisher against a real Redis: what a reader blocked on a stream gets from one flush."""

import threading

import redis

from engine.types import RequestOutput
from tests.integration.helpers import wait_for
from tests.workers.conftest import make_job
from workers import protocol
from workers.live import LiveRequest
from workers.protocol import StreamEvent
from workers.publisher import Outgoing, Publisher, first_tokens_first


def _blocked_readers(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


def test_a_blocked_reader_gets_the_start_and_the_first_tokens_in_one_reply(redis_url):
    client, reader = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    request = LiveRequest(make_job("f1"), "w1")
    replies = []
    thread = threading.Thread(daemon=True, target=lambda: replies.append(
        reader.xread({protocol.stream_key("f1"): "0-0"}, block=10_000)))
    try:
        thread.start()
        wait_for(lambda: _blocked_readers(client) == 1, what="the XREAD blocked")
        # A new request's first step: its start event and its first tokens go out in one flush.
        events = [("f1", request.start_event()), ("f1", request.tokens_event(RequestOutput("f1", [40])))]
        Publisher(client, "w1").flush(Outgoing(events=events))
        thread.join(10)
        [(key, entries)] = replies[0]
        assert [protocol.decode_event(fields[protocol.EVENT_FIELD]).type for _, fields in entries] == ["start", "tokens"]
    finally:
        client.close()
        reader.close()


def test_first_tokens_go_first_with_their_start_the_rest_keeps_its_order():
    start, first = StreamEvent(type="start", seq=0), StreamEvent(type="tokens", seq=1, token_ids=[7])
    later, done = StreamEvent(type="tokens", seq=5, token_ids=[8]), StreamEvent(type="done", seq=9)
    events = [("new", start), ("old", later), ("new", first), ("gone", done)]
    assert first_tokens_first(events) == ([("new", start), ("new", first)], [("old", later), ("gone", done)])
    assert first_tokens_first([("old", later)]) == ([], [("old", later)])


def test_a_flush_split_in_two_writes_every_event_once(redis_url):
    client = redis.Redis.from_url(redis_url)
    new, old = LiveRequest(make_job("n1"), "w1"), LiveRequest(make_job("o1"), "w1")
    old.start_event()
    events = [("n1", new.start_event()), ("o1", old.tokens_event(RequestOutput("o1", [5]))),
              ("n1", new.tokens_event(RequestOutput("n1", [6])))]
    try:
        checks = Publisher(client, "w1").flush(Outgoing(events=events, checks=["o1"]))
        assert [c.request_id for c in checks] == ["o1"]
        for rid, types in (("n1", ["start", "tokens"]), ("o1", ["tokens"])):
            entries = client.xrange(protocol.stream_key(rid))
            assert [protocol.decode_event(f[protocol.EVENT_FIELD]).type for _, f in entries] == types
    finally:
        client.close()
