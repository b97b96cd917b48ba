"""Prometheus metrics, one registry per app (so tests can build several apps in a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Buckets from 0.5 ms to 2 min: searches live at the low end, ingestion at the high end.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _IndexSizes(Collector):
    """Reads index sizes at scrape time, so there is no gauge to keep in step."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "mmv_index_vectors", "Vectors served per index (space/modality)", labels=["index"]
        )
        for name, size in sorted(self._read().items()):
            family.add_metric([name], size)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.http_latency = Histogram(
            "mmv_http_request_duration_seconds",
            "HTTP request latency per route",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_stage = Histogram(
            "mmv_ingest_stage_seconds",
            "Time per ingestion stage (probe, decode, asr, embed, store, index)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ingested = Counter(
            "mmv_items_ingested", "Items ingested, by kind and outcome", ["kind", "outcome"],
            registry=r,
        )  # fmt: skip
        self.uploads_in_flight = Gauge(
            "mmv_uploads_in_flight", "Uploads being received or processed", registry=r
        )
        self.uploads_waiting_on_same_bytes = Gauge(
            "mmv_uploads_waiting_on_same_bytes",
            "wait=true uploads of bytes another upload is processing, waiting for its outcome",
            registry=r,
        )
        self.search_stage = Histogram(
            "mmv_search_stage_seconds",
            "Time per search stage (queue, embed, index, join), per batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.search_batch = Histogram(
            "mmv_search_batch_size",
            "Queries answered together by one batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.searches = Counter(
            "mmv_searches", "Searches, by query type and target modality", ["query", "target"],
            registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "mmv_model_info", "The active model version (value 1)", ["version"], registry=r
        )
        self.items = Gauge("mmv_items", "Items stored, by status", ["status"], registry=r)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: labels() takes a lock and builds a key
        on every call, which hot paths (every request, every search) should not pay."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def watch_indexes(self, read: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_IndexSizes(read))

    def set_model(self, version: str | None) -> None:
        self.model_info.clear()
        if version:
            self.model_info.labels(version=version).set(1)

    def set_item_counts(self, by_status: dict[str, int]) -> None:
        """mmv_items{status}: read from the database at each scrape."""
        self.items.clear()
        for status, count in by_status.items():
            self.items.labels(status).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
