"""A tensor model's public signature: the graph's inputs and outputs as clients see them.

A repository config may rename tensors and give their dims; the signature applies that to the
graph probed at load (checking that the two agree), decides the batch limit the way Triton's
auto-complete does, and keeps the public -> graph name maps that requests are translated with.
KServe metadata, Triton's model config view and TF-Serving's signature all read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onnxkit.errors import InvalidRequest, SupplyError
from onnxkit.models.config import ModelConfig, TensorOverride
from onnxkit.runtime.ort import Dim, GraphInfo, TensorSpec
from onnxkit.runtime.tensors import datatype_of
from onnxkit.types import JSON

PLATFORM = "onnxruntime_onnx"
# Triton's auto-complete gives a batchable ONNX model this max_batch_size when no config sets one.
DEFAULT_MAX_BATCH_SIZE = 4


def dims(spec: TensorSpec) -> list[int]:
    """KServe shape: symbolic and unknown dims are -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]


def describe(spec: TensorSpec) -> str:
    return f"{spec.name!r} ({datatype_of(spec.dtype)} {dims(spec)})"


@dataclass(frozen=True)
class Signature:
    model: str
    inputs: tuple[TensorSpec, ...]  # public names and shapes
    outputs: tuple[TensorSpec, ...]
    input_source: dict[str, str]  # public name -> graph name
    output_source: dict[str, str]
    max_batch_size: int  # 0: the model does not batch (no batch dim)

    def input(self, name: str) -> TensorSpec:
        found = next((s for s in self.inputs if s.name == name), None)
        if found is None:
            have = ", ".join(describe(s) for s in self.inputs)
            raise InvalidRequest(f"model {self.model!r} has no input {name!r}; its inputs: {have}")
        return found

    def check_outputs(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.output_source:
                have = ", ".join(describe(s) for s in self.outputs)
                raise InvalidRequest(f"model {self.model!r} has no output {name!r}; its outputs: {have}")

    def metadata(self) -> JSON:
        """KServe v2 model metadata's platform, inputs and outputs."""
        return {
            "platform": PLATFORM,
            "inputs": [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": dims(s)} for s in self.inputs],
            "outputs": [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": dims(s)} for s in self.outputs],
        }

    def triton_config(self, config: ModelConfig, batching: bool) -> JSON:
        """Triton's ``/v2/models/{m}/config`` view (protobuf JSON of its ModelConfig)."""
        skip = 1 if self.max_batch_size else 0

        def entry(s: TensorSpec) -> JSON:
            return {"name": s.name, "data_type": "TYPE_" + datatype_of(s.dtype).replace("BYTES", "STRING"),
                    "dims": dims(s)[skip:]}  # fmt: skip

        out: JSON = {
            "name": self.model,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "max_batch_size": self.max_batch_size,
            "version_policy": config.version_policy.describe(),
            "input": [entry(s) for s in self.inputs],
            "output": [entry(s) for s in self.outputs],
        }
        if batching:
            out["dynamic_batching"] = {"max_queue_delay_microseconds": int(config.max_queue_delay_ms * 1000)}
        return out


def signature(graph: GraphInfo, config: ModelConfig, model: str) -> Signature:
    """The public signature of ``graph`` under ``config``; a config that disagrees with the graph is refused."""
    batchable = _batchable(graph)
    if config.max_batch_size is None:
        max_batch = DEFAULT_MAX_BATCH_SIZE if batchable else 0
    else:
        max_batch = max(0, config.max_batch_size)
        if max_batch and not batchable:
            fixed = next(s for s in graph.inputs + graph.outputs if not s.shape or isinstance(s.shape[0], int))
            raise SupplyError(
                f"model {model!r} sets max_batch_size {max_batch}, which needs a dynamic first "
                f"(batch) dim on every input and output; {describe(fixed)} has none. "
                "Set max_batch_size: 0 or export with a dynamic batch axis"
            )
    batched = max_batch > 0
    inputs, in_source = _public(graph.inputs, config.inputs, batched, model, "input")
    outputs, out_source = _public(graph.outputs, config.outputs, batched, model, "output")
    return Signature(model, inputs, outputs, in_source, out_source, max_batch)


def _batchable(info: GraphInfo) -> bool:
    return all(s.shape and not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in info.inputs + info.outputs)


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
        public = spec if o is None else TensorSpec(o.name, spec.dtype, _override_shape(spec, o, batched, model, kind))
        specs.append(public)
        source[public.name] = spec.name
    return tuple(specs), source


def _override_shape(spec: TensorSpec, o: TensorOverride, batched: bool, model: str, kind: str) -> tuple[Dim, ...]:
    if o.datatype and o.datatype != datatype_of(spec.dtype):
        raise SupplyError(
            f"model {model!r} config says {kind} {o.source!r} is {o.datatype}; the graph has {datatype_of(spec.dtype)}"
        )
    if o.dims is None:
        return spec.shape
    shape: tuple[Dim, ...] = ((-1,) if batched else ()) + tuple(o.dims)
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
    return tuple(
        g if isinstance(c, int) and c < 0 and not isinstance(g, int) else c
        for g, c in zip(spec.shape, shape, strict=True)
    )
