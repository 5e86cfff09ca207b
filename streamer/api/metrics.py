"""The API's Prometheus metrics and the middleware that times requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.adapters.metrics import collect_process


class ApiMetrics:
    """The API's Prometheus metrics (a registry of its own), with the
    process's (CPU, memory, open files), the platform's and the garbage
    collector's."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        collect_process(self.registry)
        # (alert rules read status: keep the name and the labels as they are)
        self.latency = Histogram(
            "hotspots_api_request_seconds",
            "API request latency by route (its path pattern), method and status code",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.push_clients = Gauge(
            "hotspots_push_clients", "connected push clients", ["channel"], registry=self.registry
        )
        self.dropped = Counter(
            "hotspots_push_dropped_total",
            "push clients disconnected for falling behind",
            registry=self.registry,
        )
        self.sent = Counter(
            "hotspots_push_messages_total", "push messages sent", registry=self.registry
        )
        self._timers: dict[tuple[str, str, int], Callable[[float], None]] = {}

    def request_took(self, route: str, method: str, status: int, seconds: float) -> None:
        """Counts a request of ``route`` (its path pattern) by ``method``
        answered ``status`` (a number, "200") that took ``seconds``."""
        key = (route, method, status)
        timer = self._timers.get(key)
        if timer is None:  # (labels() locks and hashes: once per label set)
            labels = self.latency.labels(route, method, str(status))
            timer = self._timers[key] = labels.observe
        timer(seconds)


class Timing:
    """Request latency by route (pure ASGI: the decorator middleware costs
    a task and a stream per request). Push streams are not timed."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/v1/stream":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # (what the server answers when the app raised before answering)

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            name = getattr(scope.get("route"), "path", "other")
            took = time.perf_counter() - started
            self.metrics.request_took(name, scope["method"], status, took)
