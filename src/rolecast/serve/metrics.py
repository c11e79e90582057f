"""Prometheus metrics of the server (``GET /metrics``): requests, tokens, latency, queue depth.

Each app gets its own registry, so several apps (tests) never share counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from ..chat.performer import Reply
    from .service import ChatService

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, service: ChatService):
        self.registry = CollectorRegistry()
        self.requests = Counter("rolecast_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("rolecast_request_seconds", "HTTP request latency (whole response)", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("rolecast_completion_tokens", "Tokens generated", ["model"], registry=self.registry)
        self.prompt_tokens = Counter("rolecast_prompt_tokens", "Prompt tokens", ["model"], registry=self.registry)
        self.generation = Histogram("rolecast_generation_seconds", "Time to generate a reply", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_token = Histogram("rolecast_first_token_seconds", "Time to the first streamed piece", ["model"],
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_QueueDepth(service))
        service.on_reply = self.reply

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def reply(self, model: str, reply: Reply) -> None:
        self.tokens.labels(model).inc(reply.completion_tokens)
        self.prompt_tokens.labels(model).inc(reply.prompt_tokens)
        self.generation.labels(model).observe(reply.seconds)
        if reply.first_token_seconds is not None:
            self.first_token.labels(model).observe(reply.first_token_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueDepth:
    """Requests waiting or running per generation pool, read at scrape time."""

    def __init__(self, service: ChatService):
        self.service = service

    def collect(self):
        gauge = GaugeMetricFamily("rolecast_queue_depth", "Requests waiting or running per model pool", labels=["pool"])
        for pool in sorted(self.service.pools(), key=lambda p: p.name):  # the blind arms' pools too
            gauge.add_metric([pool.name], pool.pending)
        yield gauge
