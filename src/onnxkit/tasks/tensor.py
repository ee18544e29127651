"""Tensor inference: KServe v2 REST, KServe v2 gRPC and TF-Serving all end in ``TensorModel.infer``.

Inputs are checked against the model's public signature (names, datatypes, shapes, the batch
limit) so a bad request is answered with what was expected and what arrived, before onnxruntime
sees it. With ``max_batch_size > 0`` requests go through one ``Batcher`` per model (started on
first use): rows are concatenated along axis 0, run once, and split back, so each request gets
exactly the rows it sent. A merged run that fails is re-run request by request, so only the
request that caused it fails.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.models.config import ModelConfig
from onnxkit.runtime.batching import Batcher, BatchStats, Placement
from onnxkit.runtime.metrics import Recorder
from onnxkit.runtime.ort import Dim, OrtSession
from onnxkit.runtime.tensors import datatype_of
from onnxkit.settings import ServerSettings
from onnxkit.tasks.signature import Signature, describe, dims, signature
from onnxkit.types import JSON, Array

# Runs that recently took less than this stay on the event loop: a worker-thread hop costs more.
INLINE_BELOW_MS = 0.5


@dataclass(frozen=True)
class _Item:
    feeds: dict[str, Array]  # graph names
    outputs: tuple[str, ...]  # graph names
    rows: int
    sizes: tuple[tuple[str, int], ...]  # symbolic dim -> this request's size (for unpadding)


class TensorModel:
    task = "tensor"

    def __init__(
        self,
        name: str,
        version: str,
        session: OrtSession,
        config: ModelConfig,
        settings: ServerSettings,
        recorder: Recorder,
    ) -> None:
        self.name = name
        self.version = version
        self.session = session
        self.config = config
        self.signature: Signature = signature(session.info, config, name)
        self.batching = self.signature.max_batch_size > 0 and config.dynamic_batching is not False
        self.max_elements = settings.limits.max_tensor_elements
        self._recorder = recorder
        self._out_public = {g: p for p, g in self.signature.output_source.items()}
        self._placement = Placement(INLINE_BELOW_MS / 1000)  # unbatched runs, as in Batcher
        # Phases of the last tensor batch (input, infer, output seconds): set by _run_batch, read by its
        # Batcher's on_batch right after, before the next batch starts (one batch in flight).
        self._phases: tuple[float, float, float] | None = None
        self._batcher: Batcher[_Item, dict[str, Array]] | None = None
        if self.batching:
            # Its task starts on the first submit: a text model never called over KServe runs no second batcher.
            self._batcher = Batcher(
                self._run_batch,
                name=name,
                max_batch_cost=self.signature.max_batch_size,
                max_delay_ms=config.max_queue_delay_ms,
                max_queue=config.max_queue_size or settings.max_queue,
                cost=lambda item: item.rows,
                key=self._key,
                on_batch=self._on_batch,
                inline_below_ms=INLINE_BELOW_MS,
            )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()

    @property
    def max_batch_size(self) -> int:
        return self.signature.max_batch_size

    def triton_config(self) -> JSON:
        return self.signature.triton_config(self.config, self.batching)

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
            raw = await (self._batcher.submit(item) if self._batcher is not None else self._run_one(item))
            result = {self._out_public[g]: a for g, a in raw.items()}
            for name, k in (classification or {}).items():
                result[name] = self._classify(result[name], k)
            ok = True
            return result
        finally:
            self._recorder.request(ok, time.perf_counter() - started)

    async def _run_one(self, item: _Item) -> dict[str, Array]:
        raw, took = await self._placement.run(self._run_item, item)
        self._recorder.batch(1, [0.0], took, rows=item.rows)
        return raw

    def _run_item(self, item: _Item) -> dict[str, Array]:
        return self.session.run(item.feeds, item.outputs)

    def _on_batch(self, batch: BatchStats) -> None:
        phases, self._phases = self._phases, None
        self._recorder.batch(batch.size, batch.queue_seconds, batch.compute_seconds, rows=batch.cost, phases=phases)

    def _prepare(self, inputs: Mapping[str, Array], outputs: Sequence[str] | None, classes: Mapping[str, int]) -> _Item:
        sig = self.signature
        for name in inputs:
            sig.input(name)  # raises naming the inputs the model has
        missing = [s for s in sig.inputs if s.name not in inputs]
        if missing:
            raise InvalidRequest(f"model {self.name!r} needs input {describe(missing[0])}; the request did not send it")
        feeds: dict[str, Array] = {}
        rows = -1
        sizes: dict[str, int] = {}
        for spec in sig.inputs:
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
            if sig.max_batch_size:
                n = int(array.shape[0])
                if n > sig.max_batch_size:
                    raise InvalidRequest(
                        f"input {spec.name!r} of model {self.name!r} has {n} rows; max_batch_size is "
                        f"{sig.max_batch_size}. Split the request"
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
            feeds[sig.input_source[spec.name]] = array
        wanted = list(outputs) if outputs else [s.name for s in sig.outputs]
        sig.check_outputs([*wanted, *classes])
        for name, k in classes.items():
            if k < 1:
                raise InvalidRequest(f"output {name!r}: classification count is {k}; expected 1 or more")
        # Classification outputs must be computed even when not listed.
        graph_outs = tuple(dict.fromkeys(sig.output_source[n] for n in [*wanted, *classes]))
        return _Item(feeds, graph_outs, max(rows, 1), tuple(sorted(sizes.items())))

    def _key(self, item: _Item) -> Hashable:
        # Requests batch together only when their non-batch dims agree (or may be padded).
        shapes: tuple[Any, ...]
        if self.config.pad_variable_dims:
            shapes = tuple(
                (n, a.dtype.str, tuple(d if isinstance(g, int) else -1
                                       for g, d in zip(self._graph_shape(n), a.shape[1:], strict=True)))
                for n, a in item.feeds.items()
            )  # fmt: skip
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
        padded = sum(it.rows for it in items) * _padded_row(items)
        if padded > self.max_elements:  # absurd dims: never pad a merged batch past one request's bound
            raise Unmergeable(f"a merged batch would hold {padded} elements; the bound is {self.max_elements}")
        feeds = {name: _concat([it.feeds[name] for it in items]) for name in items[0].feeds}
        t1 = time.perf_counter()
        result = self.session.run(feeds, items[0].outputs)
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


class Unmergeable(Exception):
    """These requests cannot run as one batch; the batcher runs them one by one."""


def _padded_row(items: list[_Item]) -> int:
    """Elements per row once every input is padded to the batch's largest dims (the widest input)."""
    widest = 0
    for name in items[0].feeds:
        dims = [max(it.feeds[name].shape[i] for it in items) for i in range(1, items[0].feeds[name].ndim)]
        widest = max(widest, math.prod(dims))
    return widest


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
