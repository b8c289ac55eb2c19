"""Prometheus metrics of one app, in a registry of its own (two apps in one process never share counts)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any


class ServeMetrics:
    """Requests by route and status, latency, batch sizes, queue length, images per second.

    ``images_per_second`` is a gauge over the last ``window_s`` seconds so a plain scrape shows the
    current throughput; ``images_total`` is the counter Prometheus' ``rate()`` wants.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fashattr_requests", "HTTP requests by route and status code", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "fashattr_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "fashattr_batch_size", "images per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.model_seconds = Histogram(
            "fashattr_model_seconds",
            "seconds per model call (logits + decoding)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.queue_length = Gauge("fashattr_queue_length", "images waiting for the model", registry=r)
        self.in_flight = Gauge("fashattr_images_in_flight", "images admitted and not yet answered", registry=r)
        self.images = Counter("fashattr_images", "images predicted", registry=r)
        self.rejected = Counter("fashattr_rejected", "requests refused by a limit", ["reason"], registry=r)
        self.window_s = window_s
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        Gauge("fashattr_images_per_second", "images predicted per second, last 10 s", registry=r).set_function(
            self.images_per_second
        )

    def observe_batch(self, n: int, seconds: float) -> None:
        """One model call of ``n`` images that took ``seconds``."""
        self.batch_size.observe(n)
        self.model_seconds.observe(seconds)
        self.images.inc(n)
        with self._lock:
            self._recent.append((time.monotonic(), n))

    def images_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()
            total = sum(n for _, n in self._recent)
        return total / self.window_s

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float | None:
        """One sample's current value (tests and the load benchmark read it)."""
        return self.registry.get_sample_value(name, labels or {})
