"""The batching Redis channel against a real Redis: one read brings every queued message the
prefetch window has room for, and no more."""

import base64
import json

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from workers.celery_app import app, configure
from workers.receipt import BatchingTransport


@pytest.fixture
def connection(redis_url):
    with Connection(redis_url, transport=BatchingTransport) as conn:
        yield conn


def _publish(conn, queue: Queue, count: int) -> None:
    with conn.channel() as channel:
        producer = Producer(channel)
        for i in range(count):
            producer.publish({"n": i}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])


def _consume_once(conn, queue: Queue, prefetch: int) -> list[int]:
    received = []

    def on_message(body, message):
        received.append(body["n"])

    channel = conn.channel()
    channel.basic_qos(0, prefetch, False)
    with Consumer(channel, queues=[queue], callbacks=[on_message]):
        conn.drain_events(timeout=2)
    return received


def test_one_read_takes_what_the_prefetch_window_has_room_for(connection, redis_url):
    queue = Queue("batch-test", Exchange("batch-test", type="direct"), routing_key="batch-test")
    _publish(connection, queue, 5)
    assert _consume_once(connection, queue, prefetch=3) == [0, 1, 2]  # oldest first, window of 3
    assert redis.Redis.from_url(redis_url).llen("batch-test") == 2  # the rest stay for other workers


def test_the_worker_app_uses_it(redis_url):
    before = app.conf.broker_url
    try:
        configure(redis_url)
        assert app.conf.broker_transport == "workers.receipt:BatchingTransport"
        with app.connection_for_read() as conn:
            assert isinstance(conn.transport, BatchingTransport)
    finally:
        app.conf.broker_url, app.conf.broker_transport = before, None


def test_messages_after_a_failed_delivery_go_back_to_the_queue_in_order(connection, redis_url):
    queue = Queue("batch-fail", Exchange("batch-fail", type="direct"), routing_key="batch-fail")
    _publish(connection, queue, 4)
    received = []

    def on_message(body, message):
        received.append(body["n"])
        if body["n"] == 1:
            raise RuntimeError("consumer failed")

    channel = connection.channel()
    channel.basic_qos(0, 4, False)
    with Consumer(channel, queues=[queue], callbacks=[on_message]):
        with pytest.raises(RuntimeError):
            connection.drain_events(timeout=2)
    assert received == [0, 1]
    client = redis.Redis.from_url(redis_url)
    left = [json.loads(base64.b64decode(json.loads(raw)["body"]))["n"]
            for raw in reversed(client.lrange("batch-fail", 0, -1))]
    assert left == [2, 3]  # oldest first, as RPOP will take them


def test_with_the_hook_on_a_job_that_arrives_during_a_hand_over_comes_with_the_same_read(connection, redis_url):
    queue = Queue("batch-sweep", Exchange("batch-sweep", type="direct"), routing_key="batch-sweep")
    _publish(connection, queue, 2)
    seen, received = [], []

    def on_message(body, message):
        received.append(body["n"])
        if body["n"] == 1:  # while Celery would handle job 1, job 2 reaches the queue
            with connection.clone() as other:
                with other.channel() as channel:
                    Producer(channel).publish({"n": 2}, exchange=queue.exchange, routing_key=queue.routing_key)

    BatchingTransport.on_message = lambda envelope: seen.append(json.loads(base64.b64decode(envelope["body"]))["n"])
    try:
        channel = connection.channel()
        channel.basic_qos(0, 8, False)
        with Consumer(channel, queues=[queue], callbacks=[on_message]):
            connection.drain_events(timeout=2)  # one BRPOP read
    finally:
        BatchingTransport.on_message = None
    assert seen == [0, 1, 2] and received == [0, 1, 2]
    assert redis.Redis.from_url(redis_url).llen("batch-sweep") == 0
