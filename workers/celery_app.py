"""The worker's Celery app. Failure ownership is the gateway's (it re-dispatches a continuation when a
lease lapses), so Celery redelivery is never relied upon. acks_late is on anyway, for what it does to
prefetch: with prefetch multiplier 1 a worker then holds exactly as many messages as it runs (an early
ack would let it reserve one more per thread), so the backlog stays in Redis for any worker. A message
of a worker that dies is redelivered only after the visibility timeout; its deadline has passed by
then, so it does no work."""

from __future__ import annotations

from celery import Celery

app = Celery("llmq", set_as_current=False)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,  # no pidbox queue per worker
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def configure(redis_url: str) -> Celery:
    app.conf.broker_url = redis_url
    return app
