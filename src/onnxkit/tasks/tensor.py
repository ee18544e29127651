"""The tensor data plane: KServe REST, KServe gRPC and TF-Serving all call ``TensorModel.infer``.

Inputs are checked against the graph probed at load (names, datatypes, shapes,
the batch limit) so a bad request is answered with what was expected and what
arrived, before onnxruntime sees it. With ``max_batch_size > 0`` requests go
through one ``Batcher`` per model: rows are concatenated along axis 0, run
once, and split back, so each request gets exactly the rows it sent.

Each model version counts what Triton's statistics extension reports
(``InferenceStats``), from the same calls that feed its Prometheus series.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import InvalidRequest, OnnxkitError, SupplyError
from onnxkit.models.config import ModelConfig, TensorOverride, config_from_meta
from onnxkit.runtime.batching import Batcher, BatchStats
from onnxkit.runtime.metrics import METRICS, ModelMetrics
from onnxkit.runtime.ort import Dim, GraphInfo, OrtSession, TensorSpec
from onnxkit.runtime.store import ModelStore
from onnxkit.runtime.tensors import datatype_of
from onnxkit.settings import ServerSettings
from onnxkit.tasks.loader import onnx_file
from onnxkit.types import JSON, Array

PLATFORM = "onnxruntime_onnx"
# Triton's auto-complete gives a batchable ONNX model this max_batch_size when no config sets one.
DEFAULT_MAX_BATCH_SIZE = 4
# Runs that recently took less than this stay on the event loop: a worker-thread hop costs more.
INLINE_BELOW_MS = 0.5


def dims(spec: TensorSpec) -> list[int]:
    """KServe shape: symbolic and unknown dims are -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]


def describe(spec: TensorSpec) -> str:
    return f"{spec.name!r} ({datatype_of(spec.dtype)} {dims(spec)})"


@dataclass(frozen=True)
class _Item:
    feeds: dict[str, Array]  # graph names
    outputs: tuple[str, ...]  # graph names
    rows: int
    sizes: tuple[tuple[str, int], ...]  # symbolic dim -> this request's size (for unpadding)


class InferenceStats:
    """Triton's statistics extension for one model version, counted in-process.

    Per request (as Triton counts): ``success`` / ``fail`` with the end-to-end time, ``queue``, and
    the compute phases of the batch it ran in (each request counts its batch's durations). Per
    runtime call: ``execution_count``, ``inference_count`` (rows) and the phases by batch size.
    Callers record on the event loop; the lock keeps a report whole should one record from a thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        # [count, ns] pairs
        self.success = [0, 0]
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute_input = [0, 0]
        self.compute_infer = [0, 0]
        self.compute_output = [0, 0]
        self.batches: dict[int, list[int]] = {}  # rows -> [executions, input ns, infer ns, output ns]

    def request(self, ok: bool, seconds: float) -> None:
        ns = int(seconds * 1e9)
        with self._lock:
            target = self.success if ok else self.fail
            target[0] += 1
            target[1] += ns
            if ok:
                self.last_inference_ms = time.time_ns() // 1_000_000

    def execution(self, rows: int, queue_seconds: Sequence[float], phases: tuple[float, float, float]) -> None:
        """One runtime call of ``rows`` rows for ``len(queue_seconds)`` requests; phases in seconds."""
        n = len(queue_seconds)
        ns_in, ns_infer, ns_out = (int(p * 1e9) for p in phases)
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self.queue[0] += n
            self.queue[1] += int(sum(queue_seconds) * 1e9)
            for target, ns in ((self.compute_input, ns_in), (self.compute_infer, ns_infer),
                               (self.compute_output, ns_out)):  # fmt: skip
                target[0] += n
                target[1] += n * ns
            batch = self.batches.setdefault(rows, [0, 0, 0, 0])
            batch[0] += 1
            batch[1] += ns_in
            batch[2] += ns_infer
            batch[3] += ns_out

    def report(self, name: str, version: str) -> JSON:
        """Triton's ``$model_stat`` (REST JSON; gRPC parses the same dict into ModelStatistics)."""

        def duration(pair: list[int]) -> JSON:
            return {"count": pair[0], "ns": pair[1]}

        with self._lock:
            return {
                "name": name,
                "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": duration(self.success),
                    "fail": duration(self.fail),
                    "queue": duration(self.queue),
                    "compute_input": duration(self.compute_input),
                    "compute_infer": duration(self.compute_infer),
                    "compute_output": duration(self.compute_output),
                    "cache_hit": duration([0, 0]),
                    "cache_miss": duration([0, 0]),
                },
                "batch_stats": [
                    {
                        "batch_size": rows,
                        "compute_input": duration([b[0], b[1]]),
                        "compute_infer": duration([b[0], b[2]]),
                        "compute_output": duration([b[0], b[3]]),
                    }
                    for rows, b in sorted(self.batches.items())
                ],
            }


class _Recorder:
    """Where a model records a request or a batch: its Prometheus series and its statistics, together.

    Same methods as ``ModelMetrics``, so subclasses' own batchers (classify) count in both.
    """

    def __init__(self, metrics: ModelMetrics, stats: InferenceStats) -> None:
        self.metrics = metrics
        self.stats = stats

    def record_request(self, ok: bool, seconds: float) -> None:
        self.metrics.record_request(ok, seconds)
        self.stats.request(ok, seconds)

    def record_batch(
        self,
        size: int,
        queue_seconds: Sequence[float],
        compute_seconds: float,
        *,
        rows: int | None = None,
        phases: tuple[float, float, float] | None = None,
    ) -> None:
        """``size`` requests of ``rows`` rows (default: one each); phases: input, infer, output."""
        self.metrics.record_batch(size, queue_seconds, compute_seconds)
        self.stats.execution(size if rows is None else rows, queue_seconds, phases or (0.0, compute_seconds, 0.0))

    def on_batch(self, batch: BatchStats) -> None:
        """An ``on_batch`` hook for ``runtime.batching.Batcher``; the cost is the batch's inferences."""
        self.record_batch(batch.size, batch.queue_seconds, batch.compute_seconds, rows=batch.cost)


def _public(
    graph: Sequence[TensorSpec], overrides: Sequence[TensorOverride], batched: bool, model: str, kind: str
) -> tuple[tuple[TensorSpec, ...], dict[str, str]]:
    """Graph specs as clients see them (config renames and dims applied) and public -> graph names."""
    by_source = {o.source: o for o in overrides}
    names = {s.name for s in graph}
    for given in overrides:
        if given.source not in names:
            raise SupplyError(
                f"model {model!r} config names {kind} {given.source!r}, which the graph lacks; "
                f"graph {kind}s: {', '.join(sorted(names))}"
            )
    specs: list[TensorSpec] = []
    source: dict[str, str] = {}
    for spec in graph:
        o = by_source.get(spec.name)
        public = spec
        if o is not None:
            if o.datatype and o.datatype != datatype_of(spec.dtype):
                raise SupplyError(
                    f"model {model!r} config says {kind} {o.source!r} is {o.datatype}; "
                    f"the graph has {datatype_of(spec.dtype)}"
                )
            shape: tuple[Dim, ...] = spec.shape
            if o.dims is not None:
                shape = ((-1,) if batched else ()) + tuple(o.dims)
                if len(shape) != len(spec.shape) or any(
                    isinstance(g, int) and g >= 0 and c >= 0 and g != c
                    for g, c in zip(spec.shape, shape, strict=True)
                    if isinstance(c, int)
                ):
                    raise SupplyError(
                        f"model {model!r} config gives {kind} {o.source!r} dims {list(o.dims)}; "
                        f"the graph has {dims(spec)}" + (" (the first is the batch dim)" if batched else "")
                    )
                # Keep the graph's symbolic names where the config says -1: padding reads them.
                shape = tuple(
                    g if isinstance(c, int) and c < 0 and not isinstance(g, int) else c
                    for g, c in zip(spec.shape, shape, strict=True)
                )
            public = TensorSpec(o.name, spec.dtype, shape)
        specs.append(public)
        source[public.name] = spec.name
    return tuple(specs), source


def _batchable(info: GraphInfo) -> bool:
    return all(
        s.shape and not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in info.inputs + info.outputs
    )


class TensorModel:
    task = "tensor"

    def __init__(self, name: str, path: Path, settings: ServerSettings, meta: Mapping[str, Any]) -> None:
        self.name = name
        self.version = str(meta.get("version", "1"))
        if meta.get("config_error"):
            raise SupplyError(str(meta["config_error"]))
        self.config: ModelConfig = config_from_meta(name, meta)
        cfg = self.config
        self.session = OrtSession(
            onnx_file(path),
            threads=cfg.threads or settings.threads,
            providers=cfg.execution_providers or None,
        )
        graph = self.session.info
        batchable = _batchable(graph)
        if cfg.max_batch_size is None:
            self.max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable else 0
        else:
            self.max_batch_size = max(0, cfg.max_batch_size)
            if self.max_batch_size and not batchable:
                fixed = next(
                    s for s in graph.inputs + graph.outputs if not s.shape or isinstance(s.shape[0], int)
                )
                raise SupplyError(
                    f"model {name!r} sets max_batch_size {self.max_batch_size}, which needs a dynamic first "
                    f"(batch) dim on every input and output; {describe(fixed)} has none. "
                    "Set max_batch_size: 0 or export with a dynamic batch axis"
                )
        batched = self.max_batch_size > 0
        self.inputs, self._in_source = _public(graph.inputs, cfg.inputs, batched, name, "input")
        self.outputs, self._out_source = _public(graph.outputs, cfg.outputs, batched, name, "output")
        self._out_public = {g: p for p, g in self._out_source.items()}
        self.batching = batched and cfg.dynamic_batching is not False
        self._settings = settings
        self._batcher: Batcher[_Item, dict[str, Array]] | None = None
        self._recent_compute: float | None = None  # unbatched runs, as in Batcher
        self.stats = InferenceStats()
        self._metrics = _Recorder(METRICS.model(name, self.version), self.stats)
        # Phases of the last tensor batch (input, infer, output seconds): set by _run_batch, read by its
        # Batcher's on_batch right after, before the next batch starts (one batch in flight).
        self._phases: tuple[float, float, float] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.batching:
            self._batcher = Batcher(
                self._run_batch,
                name=self.name,
                max_batch_cost=self.max_batch_size,
                max_delay_ms=self.config.max_queue_delay_ms,
                max_queue=self.config.max_queue_size or self._settings.max_queue,
                cost=lambda item: item.rows,
                key=self._key,
                on_batch=self._on_batch,
                inline_below_ms=INLINE_BELOW_MS,
            )
            self._batcher.start()

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    # -- metadata ---------------------------------------------------------------------------------------
    def input_spec(self, name: str) -> TensorSpec:
        found = next((s for s in self.inputs if s.name == name), None)
        if found is None:
            have = ", ".join(describe(s) for s in self.inputs)
            raise InvalidRequest(f"model {self.name!r} has no input {name!r}; its inputs: {have}")
        return found

    def metadata(self) -> JSON:
        return {
            "name": self.name,
            "platform": PLATFORM,
            "inputs": [
                {"name": s.name, "datatype": datatype_of(s.dtype), "shape": dims(s)} for s in self.inputs
            ],
            "outputs": [
                {"name": s.name, "datatype": datatype_of(s.dtype), "shape": dims(s)} for s in self.outputs
            ],
        }

    def model_config(self) -> JSON:
        """Triton's ``/v2/models/{m}/config`` view."""
        skip = 1 if self.max_batch_size else 0

        def entry(s: TensorSpec) -> JSON:
            return {"name": s.name, "data_type": "TYPE_" + datatype_of(s.dtype).replace("BYTES", "STRING"),
                    "dims": dims(s)[skip:]}  # fmt: skip

        out: JSON = {
            "name": self.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "max_batch_size": self.max_batch_size,
            "version_policy": self.config.version_policy.describe(),
            "input": [entry(s) for s in self.inputs],
            "output": [entry(s) for s in self.outputs],
        }
        if self.batching:
            out["dynamic_batching"] = {
                "max_queue_delay_microseconds": int(self.config.max_queue_delay_ms * 1000),
            }
        return out

    # -- inference -------------------------------------------------------------------------------------
    async def infer(
        self,
        inputs: Mapping[str, Array],
        outputs: Sequence[str] | None = None,
        *,
        classification: Mapping[str, int] | None = None,
    ) -> dict[str, Array]:
        """Validated inputs (public names) -> requested outputs (public names, request order)."""
        started = time.perf_counter()
        ok = False
        try:
            item = self._prepare(inputs, outputs, classification or {})
            if self._batcher is not None:
                raw = await self._batcher.submit(item)
            else:
                raw = await self._run_one(item)
            result = {self._out_public[g]: a for g, a in raw.items()}
            for name, k in (classification or {}).items():
                result[name] = self._classify(result[name], k)
            ok = True
            return result
        finally:
            self._metrics.record_request(ok, time.perf_counter() - started)

    async def _run_one(self, item: _Item) -> dict[str, Array]:
        t0 = time.perf_counter()
        recent = self._recent_compute
        if recent is not None and recent < INLINE_BELOW_MS / 1000:
            raw = self.session.run(item.feeds, item.outputs)
        else:
            raw = await asyncio.to_thread(self.session.run, item.feeds, item.outputs)
        took = time.perf_counter() - t0
        self._recent_compute = took if recent is None else 0.8 * recent + 0.2 * took
        self._metrics.record_batch(1, [0.0], took, rows=item.rows)
        return raw

    def _on_batch(self, batch: BatchStats) -> None:
        phases, self._phases = self._phases, None
        self._metrics.record_batch(batch.size, batch.queue_seconds, batch.compute_seconds, rows=batch.cost,
                                   phases=phases)  # fmt: skip

    def _prepare(
        self, inputs: Mapping[str, Array], outputs: Sequence[str] | None, classes: Mapping[str, int]
    ) -> _Item:
        specs = {s.name: s for s in self.inputs}
        for name in inputs:
            if name not in specs:
                self.input_spec(name)  # raises naming the inputs the model has
        missing = [s for s in self.inputs if s.name not in inputs]
        if missing:
            raise InvalidRequest(
                f"model {self.name!r} needs input {describe(missing[0])}; the request did not send it"
            )
        feeds: dict[str, Array] = {}
        rows = -1
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            array = inputs[spec.name]
            if array.dtype != spec.dtype:
                raise InvalidRequest(
                    f"input {spec.name!r} of model {self.name!r} is {datatype_of(spec.dtype)}; "
                    f"the request sent {_datatype_name(array)}. Send datatype {datatype_of(spec.dtype)}"
                )
            if not spec.accepts_shape(array.shape):
                raise InvalidRequest(
                    f"input {spec.name!r} of model {self.name!r} has shape {dims(spec)}; "
                    f"the request sent {list(array.shape)}"
                )
            if self.max_batch_size:
                n = int(array.shape[0])
                if n > self.max_batch_size:
                    raise InvalidRequest(
                        f"input {spec.name!r} of model {self.name!r} has {n} rows; max_batch_size is "
                        f"{self.max_batch_size}. Split the request"
                    )
                if rows >= 0 and n != rows:
                    raise InvalidRequest(
                        f"inputs of model {self.name!r} disagree on the batch dim: {rows} rows and "
                        f"{spec.name!r} has {n}"
                    )
                rows = n
            for d, s in zip(spec.shape, array.shape, strict=True):
                if isinstance(d, str):
                    sizes[d] = max(sizes.get(d, 0), int(s))
            feeds[self._in_source[spec.name]] = array
        wanted = list(outputs) if outputs else [s.name for s in self.outputs]
        for name in [*wanted, *classes]:
            if name not in self._out_source:
                have = ", ".join(describe(s) for s in self.outputs)
                raise InvalidRequest(f"model {self.name!r} has no output {name!r}; its outputs: {have}")
        for name, k in classes.items():
            if k < 1:
                raise InvalidRequest(f"output {name!r}: classification count is {k}; expected 1 or more")
        # Classification outputs must be computed even when not listed.
        graph_outs = tuple(dict.fromkeys(self._out_source[n] for n in [*wanted, *classes]))
        return _Item(feeds, graph_outs, max(rows, 1), tuple(sorted(sizes.items())))

    def _key(self, item: _Item) -> Hashable:
        # Requests batch together only when their non-batch dims agree (or may be padded).
        shapes: tuple[Any, ...]
        if self.config.pad_variable_dims:
            shapes = tuple(
                (
                    n,
                    a.dtype.str,
                    tuple(
                        d if isinstance(g, int) else -1
                        for g, d in zip(self._graph_shape(n), a.shape[1:], strict=True)
                    ),
                )
                for n, a in item.feeds.items()
            )
        else:
            shapes = tuple((n, a.shape[1:]) for n, a in item.feeds.items())
        return (item.outputs, shapes)

    def _graph_shape(self, graph_name: str) -> tuple[Dim, ...]:
        spec = self.session.info.input(graph_name)
        return spec.shape[1:] if spec else ()

    def _run_batch(self, items: list[_Item]) -> list[dict[str, Array]]:
        t0 = time.perf_counter()
        if len(items) == 1:
            one = self.session.run(items[0].feeds, items[0].outputs)
            self._phases = (0.0, time.perf_counter() - t0, 0.0)
            return [one]
        outputs = items[0].outputs
        feeds = {name: _concat([it.feeds[name] for it in items]) for name in items[0].feeds}
        t1 = time.perf_counter()
        result = self.session.run(feeds, outputs)
        t2 = time.perf_counter()
        total = sum(it.rows for it in items)
        split: list[dict[str, Array]] = [{} for _ in items]
        for name, array in result.items():
            start = 0
            for i, it in enumerate(items):
                # An output without a batch dim: every request sees all of it.
                batched = bool(array.ndim) and array.shape[0] == total
                part = array[start : start + it.rows] if batched else array
                split[i][name] = self._unpad(name, part, dict(it.sizes))
                start += it.rows
        self._phases = (t1 - t0, t2 - t1, time.perf_counter() - t2)
        return split

    def _unpad(self, graph_output: str, array: Array, sizes: dict[str, int]) -> Array:
        if not self.config.pad_variable_dims or not sizes:
            return array
        spec = self.session.info.output(graph_output)
        if spec is None or len(spec.shape) != array.ndim:
            return array
        index = tuple(
            slice(0, sizes[d]) if isinstance(d, str) and d in sizes and i > 0 else slice(None)
            for i, d in enumerate(spec.shape)
        )
        return array[index]

    def _classify(self, scores: Array, k: int) -> Array:
        labels = self.config.labels
        rows = scores.reshape(1, -1) if scores.ndim <= 1 else scores.reshape(scores.shape[0], -1)
        k = min(k, rows.shape[1])
        out: Array = np.empty((rows.shape[0], k), dtype=object)
        for r, row in enumerate(rows):
            top = np.argsort(-row, kind="stable")[:k]
            for j, idx in enumerate(top):
                text = f"{float(row[idx]):f}:{int(idx)}"
                if 0 <= idx < len(labels):
                    text += f":{labels[idx]}"
                out[r, j] = text
        return out if scores.ndim > 1 else out[0]


def resolve(store: ModelStore, name: str, version: str | None = None) -> TensorModel:
    """The serving TensorModel for a request (404/503 from the store; 400 for a non-tensor model)."""
    handle = store.get(name, version).handle
    if not isinstance(handle, TensorModel):
        task = getattr(handle, "task", "unknown")
        raise InvalidRequest(
            f"model {name!r} is a {task} model; KServe and TF-Serving inference serve tensor models. "
            "Use the OpenAI routes (/v1/embeddings, /v1/chat/completions) for it"
        )
    return handle


def metadata(store: ModelStore, name: str, version: str | None = None) -> JSON:
    """KServe v2 model metadata: name, ready versions, platform, inputs, outputs."""
    handle = store.get(name, version).handle
    versions = [v.version for v in store.model(name).ready_versions()]
    if isinstance(handle, TensorModel):
        meta = handle.metadata()
    else:  # a text model (chat, embeddings) also listed here: no tensor signature to show
        meta = {"platform": f"onnxkit_{getattr(handle, 'task', 'unknown')}", "inputs": [], "outputs": []}
    return {"name": name, "versions": versions, "platform": meta["platform"],
            "inputs": meta["inputs"], "outputs": meta["outputs"]}  # fmt: skip


def statistics(store: ModelStore, name: str = "", version: str | None = None) -> list[JSON]:
    """Triton's ``model_stats``: every ready version of every tensor model, or of one model (404/503 from
    the store; 400 for a model that is not a tensor model), or one version."""
    if not name:
        return [
            v.handle.stats.report(m.name, v.version)
            for m in store.models()
            for v in m.ready_versions()
            if isinstance(v.handle, TensorModel)
        ]
    if version:
        chosen = [store.get(name, version)]
    else:
        store.get(name)  # 404 when unknown, 503 (with the reasons) when no version is ready
        chosen = store.model(name).ready_versions()
    for v in chosen:
        if not isinstance(v.handle, TensorModel):
            task = getattr(v.handle, "task", "unknown")
            raise InvalidRequest(f"model {name!r} is a {task} model; statistics count tensor models")
    return [v.handle.stats.report(name, v.version) for v in chosen]


def _datatype_name(array: Array) -> str:
    try:
        return datatype_of(array.dtype)
    except OnnxkitError:
        return str(array.dtype)


def _concat(arrays: list[Array]) -> Array:
    """Concatenate along axis 0, padding other dims to the largest (zeros / empty strings)."""
    target = tuple(max(a.shape[i] for a in arrays) for i in range(1, arrays[0].ndim))
    padded = []
    for a in arrays:
        if a.shape[1:] != target:
            widths = [(0, 0)] + [(0, t - s) for s, t in zip(a.shape[1:], target, strict=True)]
            fill: Any = "" if a.dtype == np.object_ else 0
            a = np.pad(a, widths, constant_values=fill)
        padded.append(a)
    return np.concatenate(padded, axis=0)
