"""Prometheus metrics and Triton's statistics, fed by one ``Recorder`` per model version.

``create_app`` builds one ``Metrics`` (its own registry) and the loader hands each version a
``Recorder`` from it; tasks record only through their recorder, which writes the version's
Prometheus series and its ``InferenceStats`` together, so ``/metrics`` and ``/v2/.../stats`` can
never disagree. Which models are loaded is read from the store at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from onnxkit.runtime.batching import BatchStats
from onnxkit.runtime.stats import InferenceStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
_LABELS = ("model", "version")


class Metrics:
    """The server's Prometheus registry: one per app, never process-global."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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

    def recorder(self, model: str, version: str) -> Recorder:
        return Recorder(self, model, version)

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


class Recorder:
    """Where one model version records: its Prometheus series (looked up once: ``labels()`` costs
    microseconds a call) and its Triton statistics, together."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.stats = InferenceStats()
        self._success = metrics.requests.labels(model, version, "success")
        self._failure = metrics.requests.labels(model, version, "failure")
        self._request_seconds = metrics.request_seconds.labels(model, version)
        self._queue_seconds = metrics.queue_seconds.labels(model, version)
        self._compute_seconds = metrics.compute_seconds.labels(model, version)
        self._batch_size = metrics.batch_size.labels(model, version)
        self._prompt_tokens = metrics.prompt_tokens.labels(model, version)
        self._generated_tokens = metrics.generated_tokens.labels(model, version)
        self._decode_batch = metrics.decode_batch.labels(model, version)

    def request(self, ok: bool, seconds: float) -> None:
        if ok:
            self._success.inc()
            self._request_seconds.observe(seconds)
        else:
            self._failure.inc()
        self.stats.request(ok, seconds)

    def batch(
        self,
        size: int,
        queue_seconds: Sequence[float],
        compute_seconds: float,
        *,
        rows: int | None = None,
        phases: tuple[float, float, float] | None = None,
    ) -> None:
        """``size`` requests of ``rows`` rows (default: one each) in one run; phases: input, infer, output."""
        self._batch_size.observe(size)
        self._compute_seconds.observe(compute_seconds)
        for s in queue_seconds:
            self._queue_seconds.observe(s)
        self.stats.execution(size if rows is None else rows, queue_seconds, phases or (0.0, compute_seconds, 0.0))

    def on_batch(self, batch: BatchStats) -> None:
        """An ``on_batch`` hook for ``runtime.batching.Batcher``; the cost is the batch's inferences."""
        self.batch(batch.size, batch.queue_seconds, batch.compute_seconds, rows=batch.cost)

    def tokens(self, prompt: int, generated: int) -> None:
        if prompt:
            self._prompt_tokens.inc(prompt)
        if generated:
            self._generated_tokens.inc(generated)

    def decode_step(self, sequences: int) -> None:
        """How many sequences one chat engine step advanced."""
        self._decode_batch.observe(sequences)


class _Static:
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return iter(self.families)
