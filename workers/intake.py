"""How many jobs this worker takes from Redis: while its engine has requests waiting (it cannot
admit what it already holds), Celery fetches no more, so a backlog stays in Redis where any
worker can take it. With acks_late a held job is an unacked message, so a prefetch count equal
to the jobs held means "take nothing new"."""

from __future__ import annotations


class Intake:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.consumer = None  # Celery's Consumer, set once it is ready (worker_ready signal)

    def attach(self, consumer) -> None:
        self.consumer = consumer

    def on_engine_load(self, waiting: int, held: int) -> None:
        """Called by the engine thread when the engine's waiting count or the jobs held change."""
        qos = getattr(self.consumer, "qos", None)  # replaced on reconnect: never cached
        if qos is None:
            return
        target = max(1, min(held, self.concurrency)) if waiting > 0 else self.concurrency
        delta = target - qos.value
        if delta > 0:
            qos.increment_eventually(delta)
        elif delta < 0:
            qos.decrement_eventually(-delta)
        # Apply it now rather than at Celery's next loop turn (up to a second away): for the Redis
        # transport this only sets the channel's prefetch count, under the QoS lock. A BRPOP already
        # waiting still brings one more job.
        qos.update()
