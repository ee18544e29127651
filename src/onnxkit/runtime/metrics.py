"""Prometheus metrics: one ``Metrics`` object, and small functions tasks call.

Counters and histograms are labelled by model and version. Tasks call the
module-level functions (``record_request``, ``record_batch``, ``record_tokens``),
which write to the process's ``METRICS``; which models are loaded is read from
the store at scrape time, so it can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from onnxkit.runtime.batching import BatchStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
_LABELS = ("model", "version")


class ModelMetrics:
    """One model version's series, looked up once (``labels()`` costs microseconds per call)."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.success = metrics.requests.labels(model, version, "success")
        self.failure = metrics.requests.labels(model, version, "failure")
        self.request_seconds = metrics.request_seconds.labels(model, version)
        self.queue_seconds = metrics.queue_seconds.labels(model, version)
        self.compute_seconds = metrics.compute_seconds.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)

    def record_request(self, ok: bool, seconds: float) -> None:
        if ok:
            self.success.inc()
            self.request_seconds.observe(seconds)
        else:
            self.failure.inc()

    def record_batch(self, size: int, queue_seconds: Sequence[float], compute_seconds: float) -> None:
        self.batch_size.observe(size)
        self.compute_seconds.observe(compute_seconds)
        for s in queue_seconds:
            self.queue_seconds.observe(s)

    def on_batch(self, stats: BatchStats) -> None:
        """An ``on_batch`` hook for ``runtime.batching.Batcher``."""
        self.record_batch(stats.size, stats.queue_seconds, stats.compute_seconds)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "onnxkit_requests", "Inference requests by outcome", (*_LABELS, "outcome"), registry=r
        )
        self.request_seconds = Histogram(
            "onnxkit_request_duration_seconds", "End-to-end request latency", _LABELS,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "onnxkit_queue_duration_seconds", "Time a request waited in the batch queue", _LABELS,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "onnxkit_compute_duration_seconds", "Time the runtime spent on a batch", _LABELS,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "onnxkit_batch_size", "Requests merged into one runtime call", _LABELS,
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("onnxkit_prompt_tokens", "Prompt tokens processed", _LABELS, registry=r)
        self.generated_tokens = Counter("onnxkit_generated_tokens", "Tokens generated", _LABELS, registry=r)
        self.decode_batch = Histogram(
            "onnxkit_decode_batch_size", "Sequences the chat engine stepped together", _LABELS,
            buckets=DECODE_BUCKETS, registry=r,
        )  # fmt: skip

    def model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, model, version)

    def record_request(self, model: str, version: str, ok: bool, seconds: float) -> None:
        self.requests.labels(model, version, "success" if ok else "failure").inc()
        if ok:
            self.request_seconds.labels(model, version).observe(seconds)

    def record_batch(
        self, model: str, version: str, size: int, queue_seconds: Sequence[float], compute_seconds: float
    ) -> None:
        self.batch_size.labels(model, version).observe(size)
        self.compute_seconds.labels(model, version).observe(compute_seconds)
        q = self.queue_seconds.labels(model, version)
        for s in queue_seconds:
            q.observe(s)

    def record_tokens(self, model: str, version: str, prompt: int, generated: int) -> None:
        if prompt:
            self.prompt_tokens.labels(model, version).inc(prompt)
        if generated:
            self.generated_tokens.labels(model, version).inc(generated)

    def batch_hook(self, model: str, version: str) -> Callable[[BatchStats], None]:
        """An ``on_batch`` for ``runtime.batching.Batcher``."""
        return self.model(model, version).on_batch

    def render(self, loaded: Iterable[tuple[str, str, str]] = ()) -> bytes:
        """Prometheus text; ``loaded`` is (model, version, state) for the model-state gauge."""
        gauge = GaugeMetricFamily(
            "onnxkit_model_ready",
            "1 when the model version is loaded and serving",
            labels=[*_LABELS, "state"],
        )
        for model, version, state in loaded:
            gauge.add_metric([model, version, state], 1.0 if state == "READY" else 0.0)
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_Static([gauge]))
        return generate_latest(self.registry) + generate_latest(extra)


class _Static:
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return iter(self.families)


METRICS = Metrics()


def record_request(model: str, version: str, ok: bool, seconds: float) -> None:
    METRICS.record_request(model, version, ok, seconds)


def record_batch(
    model: str, version: str, size: int, queue_seconds: Sequence[float], compute_seconds: float
) -> None:
    METRICS.record_batch(model, version, size, queue_seconds, compute_seconds)


def record_tokens(model: str, version: str, prompt: int, generated: int) -> None:
    METRICS.record_tokens(model, version, prompt, generated)


def decode_batch_hook(model: str, version: str) -> Callable[[int], None]:
    """Observes how many sequences each chat engine step advanced."""
    return METRICS.decode_batch.labels(model, version).observe
