"""Prometheus metrics: one registry per EventLog, exposed by GET /metrics."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the media type of render()'s text

# Commits take from well under a millisecond (SQLite, one event) to a second (a cold
# PostgreSQL, 1,000 events); requests may also wait in the writer's queue.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """Every metric of one event log. Names and meanings are listed in the README."""

    def __init__(self) -> None:
        # A registry of its own, not the process-wide default: several logs (tests, a host
        # program with its own metrics) never collide.
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.events_accepted = Counter(
            "eventlog_events_accepted", "Events stored for the first time.", registry=r
        )
        self.events_duplicate = Counter(
            "eventlog_events_duplicate",
            "Events sent again with the same content: acknowledged, not stored twice.",
            registry=r,
        )
        self.requests_replayed = Counter(
            "eventlog_requests_replayed",
            "Requests answered from an earlier request's receipt (same Idempotency-Key).",
            registry=r,
        )
        self.rejections = Counter(
            "eventlog_rejections",
            "Requests answered with a problem reply, by its code.",
            ["code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "eventlog_http_request_duration_seconds",
            "Time to answer a request, by route and method (a stream: how long it stayed open).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_events = Histogram(
            "eventlog_commit_batch_events",
            "Events in one group commit (one write transaction).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "eventlog_commit_duration_seconds",
            "Time one group commit took, from the store's call to its answer.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "eventlog_store_errors",
            "Store operations that failed because the database was unavailable or broken.",
            ["operation"],
            registry=r,
        )
        self.queue_events = Gauge(
            "eventlog_writer_queue_events", "Events waiting for the writer.", registry=r
        )
        self.subscribers = Gauge(
            "eventlog_stream_subscribers", "Live stream subscribers.", registry=r
        )
        self.head_seq = Gauge(
            "eventlog_head_seq", "The highest seq the live streams have seen.", registry=r
        )
        self._routes: dict[tuple[str, str], Histogram] = {}

    def follow(
        self,
        queue_events: Callable[[], float],
        subscribers: Callable[[], float],
        head_seq: Callable[[], float],
    ) -> None:
        """Read these gauges from the running log at each scrape."""
        self.queue_events.set_function(queue_events)
        self.subscribers.set_function(subscribers)
        self.head_seq.set_function(head_seq)

    def committed(self, events: int, seconds: float) -> None:
        """One group commit is done (the writer's callback)."""
        self.commit_events.observe(events)
        self.commit_seconds.observe(seconds)

    def request(self, route: str, method: str, seconds: float) -> None:
        """One HTTP request is answered."""
        child = self._routes.get((route, method))
        if child is None:
            child = self._routes[route, method] = self.request_seconds.labels(route, method)
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
