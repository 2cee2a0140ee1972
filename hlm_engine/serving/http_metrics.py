"""Prometheus metrics of the HTTP service: its own request counts and durations by route and status, plus
every engine's metrics (queue depth, batch size and tokens, tokenize / queue-wait / compute durations)
re-exported with a `role` label, so two engines (query and document) share one /metrics page.

    m = HttpMetrics({"query": engine, "document": engine2}, in_flight_fn)
    m.observe("/v1/embeddings", 200, seconds); m.text()
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric

_SECONDS = (1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _EngineCollector:
    """Yields each engine's metric families with a `role` label added to every sample."""

    def __init__(self, engines: dict):
        self.engines = engines

    def collect(self):
        merged: dict[str, Metric] = {}
        for role, eng in self.engines.items():
            for fam in eng.registry.collect():
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "role": role}, s.value, s.timestamp, s.exemplar)
        yield from merged.values()


class HttpMetrics:
    def __init__(self, engines: dict, in_flight_fn, prefix: str = "hlm_http"):
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = Counter(f"{prefix}_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.duration = Histogram(f"{prefix}_request_duration_seconds", "request arrival -> response sent, "
                                  "by route and status", ["route", "status"], buckets=_SECONDS, registry=r)
        self.in_flight = Gauge(f"{prefix}_requests_in_flight", "requests admitted and not yet answered "
                               "(bounded by --max-concurrent-requests)", registry=r)
        self.in_flight.set_function(in_flight_fn)
        r.register(_EngineCollector(engines))
        self._children: dict = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        ch = self._children.get(key)
        if ch is None:  # label lookup once per (route, status): it costs more than the observation itself
            ch = self._children[key] = (self.requests.labels(route, str(status)),
                                        self.duration.labels(route, str(status)))
        ch[0].inc()
        ch[1].observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
