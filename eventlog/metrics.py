"""Prometheus metrics: one registry per EventLog, exposed by GET /metrics.

The request path only adds to plain ints and floats; prometheus-client's own Counter and
Histogram take a lock per update (four per request, measured), and a scrape is the only moment
the numbers need to be in Prometheus's form, so a collector of our own renders them then.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from .storage.base import ReplicaLag

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the media type of render()'s text

# Commits take from well under a millisecond (SQLite, one event) to a second (a cold
# PostgreSQL, 1,000 events); requests may also wait in the writer's queue.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (in the first bucket whose bound is at least ``value``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus's buckets: (le, observations at or below it)."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            # prometheus_client's utils carry no annotations; it returns the bound's text.
            out.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        return out


class Counters:
    """Counters by one label's value; a missing value reads 0."""

    __slots__ = ("values", "created")

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.created: dict[str, float] = {}

    def inc(self, label: str, amount: int = 1) -> None:
        """Add ``amount`` under ``label``."""
        if label not in self.values:
            self.values[label] = 0
            self.created[label] = time.time()
        self.values[label] += amount


class Metrics:
    """Every metric of one event log. Names and meanings are listed in the README."""

    def __init__(self) -> None:
        self.created = time.time()
        self.events_accepted = 0  # stored for the first time
        self.events_duplicate = 0  # sent again with the same content
        self.requests_replayed = 0  # answered from an earlier request's receipt
        self.rejections = Counters()  # by problem code
        self.store_errors = Counters()  # by operation
        self.routes: dict[tuple[str, str], Histogram] = {}
        self.commit_events = Histogram(BATCH_BUCKETS)
        self.commit_seconds = Histogram(LATENCY_BUCKETS)
        self._gauges: tuple[Callable[[], float], ...] = (lambda: 0.0,) * 3
        self.replica: ReplicaLag | None = None  # read at each scrape when there is a replica
        # A registry of its own, not the process-wide default: several logs (tests, a host
        # program with its own metrics) never collide.
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def follow(
        self,
        queue_events: Callable[[], float],
        subscribers: Callable[[], float],
        head_seq: Callable[[], float],
    ) -> None:
        """Read these gauges from the running log at each scrape."""
        self._gauges = (queue_events, subscribers, head_seq)

    def committed(self, events: int, seconds: float) -> None:
        """One group commit is done (the writer's callback)."""
        self.commit_events.observe(events)
        self.commit_seconds.observe(seconds)

    def request(self, route: str, method: str, seconds: float) -> None:
        """One HTTP request is answered."""
        histogram = self.routes.get((route, method))
        if histogram is None:
            histogram = self.routes[route, method] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def gauges(self) -> tuple[float, float, float]:
        """The writer's queue, the live subscribers and the head seq, read now."""
        queue_events, subscribers, head_seq = self._gauges
        return queue_events(), subscribers(), head_seq()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Collector(Collector):
    """Renders Metrics at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        for name, doc, value in (
            ("eventlog_events_accepted", "Events stored for the first time.", m.events_accepted),
            (
                "eventlog_events_duplicate",
                "Events sent again with the same content: acknowledged, not stored twice.",
                m.events_duplicate,
            ),
            (
                "eventlog_requests_replayed",
                "Requests answered from an earlier request's receipt (same Idempotency-Key).",
                m.requests_replayed,
            ),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value, created=m.created)
            yield family
        for name, doc, label, counters in (
            (
                "eventlog_rejections",
                "Requests answered with a problem reply, by its code.",
                "code",
                m.rejections,
            ),
            (
                "eventlog_store_errors",
                "Store operations that failed because the database was unavailable or broken.",
                "operation",
                m.store_errors,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for value_label, value in sorted(counters.values.items()):
                family.add_metric([value_label], value, created=counters.created[value_label])
            yield family
        requests = HistogramMetricFamily(
            "eventlog_http_request_duration_seconds",
            "Time to answer a request, by route and method (a stream: how long it stayed open).",
            labels=["route", "method"],
        )
        for (route, method), histogram in sorted(m.routes.items()):
            requests.add_metric([route, method], histogram.cumulative(), histogram.sum)
        yield requests
        for name, doc, histogram in (
            (
                "eventlog_commit_batch_events",
                "Events in one group commit (one write transaction).",
                m.commit_events,
            ),
            (
                "eventlog_commit_duration_seconds",
                "Time one group commit took, from the store's call to its answer.",
                m.commit_seconds,
            ),
        ):
            commits = HistogramMetricFamily(name, doc)
            commits.add_metric([], histogram.cumulative(), histogram.sum)
            yield commits
        queue_events, subscribers, head_seq = m.gauges()
        for name, doc, reading in (
            ("eventlog_writer_queue_events", "Events waiting for the writer.", queue_events),
            ("eventlog_stream_subscribers", "Live stream subscribers.", subscribers),
            ("eventlog_head_seq", "The highest seq the live streams have seen.", head_seq),
        ):
            yield GaugeMetricFamily(name, doc, value=reading)
        if m.replica is not None:
            yield from _replica_gauges(m.replica)


def _replica_gauges(lag: ReplicaLag) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "eventlog_replica_up",
        "1 when the read replica (read_dsn) answered at this scrape, else 0.",
        value=1.0 if lag.reachable else 0.0,
    )
    if lag.reachable:
        yield GaugeMetricFamily(
            "eventlog_replica_lag_seq",
            "Seqs committed on the primary that the read replica has not replayed yet.",
            value=float(lag.seqs or 0),
        )
        yield GaugeMetricFamily(
            "eventlog_replica_lag_seconds",
            "Age of the newest commit the replica replayed while it misses any (0 when caught up).",
            value=lag.seconds or 0.0,
        )
