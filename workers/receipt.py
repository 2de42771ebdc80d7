"""Kombu's Redis transport, taking every job already queued when its BRPOP returns one.

The stock channel pops one message per BRPOP, and issues the next BRPOP only after Celery handled
that message and the consumer's loop turned: a herd of 32 jobs reached the engine one every ~0.7 ms,
the last ~25 ms after the first, so many missed the engine step they would have made. Here the
channel, once a BRPOP brought a job, pops as many more as its prefetch window has room for in one
round trip (RPOP with a count, Redis 6.2+, in a short Lua script over the priority lists), shows
each to the worker's on_message hook (which hands the job to the engine loop), then delivers them
to Celery one by one, asking Redis again after each delivery so that jobs still arriving reach
the hook without waiting for the whole batch and the next BRPOP. Each job is still a message that
Celery reserves, runs and acknowledges, and the prefetch window (which the intake gate narrows
while the engine has requests waiting) still bounds what a worker holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

MAX_EXTRA = 256  # a bound for a channel without a prefetch limit, and on deliveries per BRPOP

# KEYS: the queue's lists, highest priority first; ARGV[1]: how many at most. Returns the flat list
# (key number, message, key number, message, ...), oldest first within a key.
_POP_UP_TO = """
local room = tonumber(ARGV[1])
local taken = {}
for index, key in ipairs(KEYS) do
    if room <= 0 then break end
    local items = redis.call('RPOP', key, room)
    if items then
        for _, item in ipairs(items) do
            taken[#taken + 1] = index
            taken[#taken + 1] = item
        end
        room = room - #items
    end
end
return taken
"""


class BatchingChannel(kombu_redis.Channel):
    _count_pops = True  # cleared on a server without RPOP's count argument (before 6.2)

    def _brpop_read(self, **options):
        delivered = super()._brpop_read(**options)  # raises Empty when the BRPOP timed out
        if delivered and self._count_pops:
            self._take_queued()
        return delivered

    def _room(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        return MAX_EXTRA if estimate is None else min(estimate, MAX_EXTRA)

    def _take_queued(self) -> None:
        """Every job of a batch goes to on_message first, then to Celery one by one. While the
        hook is on, Redis is asked again after each hand-over (Celery's handling of a job took
        ~0.3-0.5 ms while a burst arrived): jobs that came meanwhile reach the engine before the
        next hand-over, not after the whole batch and a new BRPOP (~3-4 ms under a burst of 32)."""
        pending = self._pop_queued()
        handed = 0
        while pending:
            (queue, _), _raw, message = pending.pop(0)
            try:
                self.connection.hand_to_celery(message, queue)
            except BaseException:
                if BatchingTransport.on_message is None:  # the stock channel would still have them queued
                    self._put_back([(pair, raw) for pair, raw, _ in pending])
                elif pending:  # they run already: queued again, they would run twice
                    log.error("%d jobs run without their Celery messages after a failed delivery", len(pending))
                raise
            handed += 1
            if BatchingTransport.on_message is not None and handed < MAX_EXTRA:  # bounded: back to the loop
                pending += self._pop_queued(held=len(pending))

    def _pop_queued(self, held: int = 0) -> list[tuple[tuple[str, str], bytes, dict]]:
        """Pops what the prefetch window has room for, besides `held` popped jobs Celery has not
        counted yet, and shows each job to on_message: [((queue, list key), raw item, message),
        ...], oldest first."""
        room = self._room() - held
        if room <= 0 or not self._count_pops:
            return []
        # Highest priority first, as BRPOP's key order has it; all keys in one round trip.
        pairs = [(queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in self.active_queues]
        try:
            with self.conn_or_acquire() as client:
                taken = client.eval(_POP_UP_TO, len(pairs), *(key for _, key in pairs), room)
        except ResponseError as exc:  # RPOP without a count: one job per BRPOP, as the stock channel
            log.warning("Redis cannot pop several jobs at once (%s); taking one per BRPOP", exc)
            BatchingChannel._count_pops = False
            return []
        popped = [(pairs[int(index) - 1], item, loads(bytes_to_str(item)))
                  for index, item in zip(taken[::2], taken[1::2])]
        for _, _, message in popped:
            self.connection.see(message)
        return popped

    def _put_back(self, popped: list) -> None:
        with self.conn_or_acquire() as client:
            for (_, key), item in reversed(popped):  # the oldest back at the right end, where RPOP takes
                client.rpush(key, item)


class BatchingTransport(kombu_redis.Transport):
    Channel = BatchingChannel
    # Sees each message (kombu's envelope, a dict) before Celery handles it: Celery's handling of
    # one message (its Request, signals, the hand-off to a pool thread) took ~0.5 ms, so the last
    # job of a batch reached the engine ~15 ms after the first when it was started from Celery's
    # task_received signal.
    on_message: Callable[[dict], None] | None = None

    def _deliver(self, message, queue):  # the stock channel's one message per BRPOP comes here
        self.see(message)
        super()._deliver(message, queue)

    def hand_to_celery(self, message: dict, queue: str) -> None:
        """Delivers a message on_message has seen already."""
        super()._deliver(message, queue)

    def see(self, message: dict) -> None:
        hook = BatchingTransport.on_message
        if hook is None:
            return
        try:
            hook(message)
        except Exception:  # noqa: BLE001 - Celery still handles the message as before
            log.exception("early receipt hook failed")
