"""Redis goes away under a running worker: its requests end once their leases have lapsed, the task
threads are released, and the worker serves again when Redis is back."""

import redis

from llmq.redis_server import RedisServer
from tests.integration.helpers import wait_for
from tests.workers.conftest import make_job, run_in_thread, stream_events
from tests.workers.fakes import ScriptedEngine
from workers import protocol
from workers.host import EngineHost
from workers.publisher import Publisher


def test_redis_outage_ends_requests_and_the_host_recovers():
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    engine = ScriptedEngine(step_s=0.005)
    host = EngineHost(engine, Publisher(client, "w1"), model="tiny", backend="scripted")
    host.start()
    try:
        thread, result = run_in_thread(host, make_job("o1", max_tokens=100_000))
        wait_for(lambda: any(e.type == "tokens" for e in stream_events(client, "o1")), 5, "first tokens")
        server.process.kill()
        server.stop()
        thread.join(protocol.LEASE_TTL_S + 5)
        assert result["outcome"] == "redis_unavailable"
        assert engine.aborted == ["o1"]

        server = RedisServer(port=server.port).start()
        assert host.run_job(make_job("o2", max_tokens=3)) == "length"
        # The ending it could not send at the time went out once Redis was back.
        [ending] = stream_events(client, "o1")
        assert ending.type == "error" and ending.error_code == "redis_unavailable"
    finally:
        host.stop()
        server.stop()
