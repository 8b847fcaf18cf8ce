"""The service's Prometheus metrics, in a registry of their own (one per app, so that several
apps in one process, as in tests, do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    """Requests, errors by kind, latency, batch sizes, queue depth, loaded version, reloads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("onerec_requests", "POST /recommend requests received", registry=r)
        self.errors = Counter("onerec_request_errors", "requests answered with an error, by "
                              "error class", ["kind"], registry=r)  # fmt: skip
        self.latency = Histogram("onerec_request_latency_seconds", "POST /recommend time from "
                                 "arrival to answer", buckets=LATENCY_BUCKETS,
                                 registry=r)  # fmt: skip
        self.batch_size = Histogram("onerec_batch_size", "requests per beam-search batch",
                                    buckets=BATCH_BUCKETS, registry=r)  # fmt: skip
        self.queue_depth = Gauge("onerec_queue_depth", "requests waiting for a batch",
                                 registry=r)  # fmt: skip
        self.version = Gauge("onerec_model_version_info", "1 for the model version being served",
                             ["version"], registry=r)  # fmt: skip
        self.reloads = Counter("onerec_reloads", "checkpoint reloads by outcome (swapped, "
                               "unchanged, refused)", ["outcome"], registry=r)  # fmt: skip

    def on_reload(self, outcome: str, version: str | None, error: Exception | None) -> None:
        """ModelStore's callback: count the outcome and keep exactly one version labelled 1."""
        self.reloads.labels(outcome).inc()
        if outcome == "swapped" and version is not None:
            self.version.clear()
            self.version.labels(version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
