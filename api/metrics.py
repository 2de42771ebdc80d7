"""Prometheus metrics of one gateway, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmq_gateway_requests", "Requests answered, by route and status",
                                ["route", "model", "status"], registry=r)
        self.in_flight = Gauge("llmq_gateway_requests_in_flight", "Accepted requests not yet finished",
                               ["model"], registry=r)
        self.prompt_tokens = Counter("llmq_gateway_prompt_tokens", "Prompt tokens of accepted requests",
                                     ["model"], registry=r)
        self.completion_tokens = Counter("llmq_gateway_completion_tokens", "Tokens generated", ["model"], registry=r)
        self.time_to_first_token = Histogram("llmq_gateway_time_to_first_token_seconds",
                                             "From request accepted to its first token", ["model"],
                                             buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("llmq_gateway_request_seconds", "From request accepted to its terminal event",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("llmq_gateway_rejected", "Requests refused by admission control",
                                ["model", "reason"], registry=r)
        self.redispatches = Counter("llmq_gateway_redispatches", "Continuation jobs sent after a worker was lost",
                                    ["model"], registry=r)
        self.failures = Counter("llmq_gateway_failures", "Accepted requests that ended in an error",
                                ["model", "code"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
