"""Serving metrics for one `Engine`, in a private prometheus_client registry (engines never clash).

    m = EngineMetrics(depth_fn)     # depth_fn() -> requests accepted but not yet dispatched
    m.as_dict()                     # plain dict: counters, the depth gauge, histogram count/sum/mean/buckets
    m.text()                        # Prometheus text exposition format
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)
_SECONDS_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

# Counter name -> help. prometheus_client exposes each as <name>_total.
_COUNTERS = {
    "requests": "requests accepted by submit() and taken up by the tokenizer thread",
    "completed": "requests that got an embedding",
    "rejected": "requests refused with QueueFull (backpressure)",
    "expired": "requests failed with DeadlineExceeded, never computed",
    "failed": "requests failed because the model raised on their batch",
    "invalid": "requests failed at submit for bad input",
    "cancelled": "requests cancelled by the caller",
}


class EngineMetrics:
    def __init__(self, depth_fn, prefix: str = "hlm"):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.prefix = prefix
        self.queue_depth = Gauge(f"{prefix}_queue_depth", "requests accepted but not yet dispatched", registry=r)
        self.queue_depth.set_function(depth_fn)
        self.batch_size = Histogram(f"{prefix}_batch_size", "requests per model batch", buckets=_SIZE_BUCKETS,
                                    registry=r)
        self.batch_tokens = Histogram(f"{prefix}_batch_tokens", "real (unpadded) tokens per model batch",
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.queue_wait = Histogram(f"{prefix}_queue_wait_seconds", "submit -> dispatch to the model, per request",
                                    buckets=_SECONDS_BUCKETS, registry=r)
        self.tokenize = Histogram(f"{prefix}_tokenize_seconds", "tokenizer time per chunk of requests taken up "
                                  "together", buckets=_SECONDS_BUCKETS, registry=r)
        self.compute = Histogram(f"{prefix}_compute_seconds", "model time per batch", buckets=_SECONDS_BUCKETS,
                                 registry=r)
        for name, doc in _COUNTERS.items():
            setattr(self, name, Counter(f"{prefix}_{name}", doc, registry=r))

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def as_dict(self) -> dict:
        """{counter: value, 'queue_depth': n, histogram: {count, sum, mean, buckets: {le: cumulative count}}}."""
        out: dict = {}
        strip = len(self.prefix) + 1
        for fam in self.registry.collect():
            name = fam.name[strip:]
            if fam.type == "counter":
                out[name] = int(next(s.value for s in fam.samples if s.name.endswith("_total")))
            elif fam.type == "gauge":
                out[name] = fam.samples[0].value
            elif fam.type == "histogram":
                h = {"count": 0, "sum": 0.0, "buckets": {}}
                for s in fam.samples:
                    if s.name.endswith("_count"):
                        h["count"] = int(s.value)
                    elif s.name.endswith("_sum"):
                        h["sum"] = s.value
                    elif s.name.endswith("_bucket"):
                        h["buckets"][s.labels["le"]] = int(s.value)
                h["mean"] = h["sum"] / h["count"] if h["count"] else 0.0
                out[name] = h
        return out
