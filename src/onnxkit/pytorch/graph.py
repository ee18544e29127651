"""An ONNX graph parsed once into plain data: nodes bound to op functions, constants folded.

Everything that can fail for a structural reason (an op, a domain or an attribute we do not know)
fails here, at load time, rather than in the middle of a forward pass.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

from onnxkit.errors import InvalidRequest
from onnxkit.pytorch.fuse import fuse
from onnxkit.pytorch.ir import Graph, Node, OpFn
from onnxkit.pytorch.ops import DEFAULT_DOMAINS, lookup, takes_scope


class UnsupportedOp(InvalidRequest):
    pass


# Inputs that configure an op rather than carry data: a float initializer read only here (Resize's
# scales, Dropout's ratio...) is a setting, not a weight.
SETTINGS = {"Resize": {1, 2}, "Upsample": {1}, "Dropout": {1, 2}, "Range": {0, 1, 2}, "OneHot": {1, 2}}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def weight_names(g: onnx.GraphProto) -> set[str]:
    """The initializers that become parameters: float, rank >= 1, read as data by some node.

    0-d floats are constants the exporter hoisted (attention scale, epsilon, the mask's fill value);
    importer and write-back share this one rule.
    """
    candidates = {i.name for i in g.initializer if i.data_type in FLOAT_TYPES and len(i.dims) > 0}
    read: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            settings = SETTINGS.get(node.op_type, set()) if node.domain in DEFAULT_DOMAINS else set()
            read.update(name for k, name in enumerate(node.input) if k not in settings)
            for a in node.attribute:
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    visit(sub)

    visit(g)
    return candidates & read


def to_tensor(t: onnx.TensorProto) -> Tensor:
    if t.data_type == onnx.TensorProto.STRING:
        raise UnsupportedOp(f"tensor {t.name!r} holds strings; only numeric tensors can become torch tensors")
    arr = numpy_helper.to_array(t)
    if t.data_type == onnx.TensorProto.BFLOAT16:
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True))


@functools.cache
def _params(fn: OpFn) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def _reads(node: Node) -> set[str]:
    names = {i for i in node.inputs if i}
    for value in node.attrs.values():
        if isinstance(value, Graph):
            names |= value.outer
    return names


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.op_type} -> {', '.join(node.output)})"


class Parser:
    """Parses a model's main graph and subgraphs; collects constants into one store."""

    def __init__(self, model: onnx.ModelProto, *, fuse: bool = True) -> None:
        self.fuse = fuse
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.opset = max(self.opsets.get(d, 0) for d in DEFAULT_DOMAINS)
        self.store: dict[str, Tensor] = {}
        self.problems: list[str] = []

    def _keep(self, value: Tensor) -> str:
        key = f"c{len(self.store)}"
        self.store[key] = value
        return key

    def _attr(self, a: onnx.AttributeProto) -> Any:
        kind = onnx.AttributeProto
        if a.type == kind.GRAPH:
            return self.graph(a.g)
        if a.type == kind.TENSOR:
            return to_tensor(a.t)
        value = onnx.helper.get_attribute_value(a)
        if a.type == kind.STRING:
            return value.decode()
        if a.type == kind.STRINGS:
            return [v.decode() for v in value]
        if a.type in (kind.FLOATS, kind.INTS):
            return list(value)
        return value

    def graph(self, g: onnx.GraphProto, *, weights: Mapping[str, Tensor] | None = None) -> Graph:
        # weights: the main graph's initializers, which become parameters and buffers (never folded)
        skip = weights or {}
        known: dict[str, Tensor] = {i.name: to_tensor(i) for i in g.initializer if i.name not in skip}
        defined = set(known) | {i.name for i in g.input} | set(skip)
        raw: list[Node] = []
        for index, proto in enumerate(g.node):
            label = _node_label(proto, index)
            domain = proto.domain or ""
            fn = lookup(proto.op_type, domain, self.opset)
            if fn is None:
                opset = self.opsets.get(domain, self.opset)
                shown = domain or "ai.onnx"
                self.problems.append(f"op {proto.op_type!r} (domain {shown!r}, opset {opset}) at node {label!r}")
                continue
            attrs = {a.name: self._attr(a) for a in proto.attribute}
            unknown = set(attrs) - _params(fn)
            if unknown:
                self.problems.append(
                    f"attribute(s) {sorted(unknown)} of op {proto.op_type!r} at node {label!r} "
                    f"(opset {self.opset}; known: {sorted(_params(fn))})"
                )
                continue
            if proto.op_type == "Split":
                attrs.setdefault("num_outputs", len(proto.output))
            node = Node(proto.op_type, label, fn, takes_scope(fn), tuple(proto.input), tuple(proto.output), attrs)
            defined.update(node.outputs)
            if not self._fold(node, known):
                raw.append(node)
        outputs = tuple(o.name for o in g.output)
        if self.fuse:
            counts = Counter(n for node in raw for n in _reads(node)) + Counter(outputs)
            raw = fuse(raw, lambda name: known.get(name, skip.get(name)), counts, set(skip) | set(known))
        return self._finish(g, raw, known, defined, outputs)

    def _fold(self, node: Node, known: dict[str, Tensor]) -> bool:
        """Evaluate a node now when all its inputs are constants (Constant nodes mostly)."""
        if node.scoped or not all(i in known for i in node.inputs if i):
            return False
        try:
            out = node.fn(*[known[i] if i else None for i in node.inputs], **node.attrs)
        except Exception:
            return False  # leave it to run time, where the failure names the node
        values = [out] if isinstance(out, Tensor) else list(out)
        for name, value in zip(node.outputs, values, strict=False):
            if name:
                known[name] = value
        return True

    def _finish(
        self,
        g: onnx.GraphProto,
        raw: list[Node],
        known: dict[str, Tensor],
        defined: set[str],
        outputs: tuple[str, ...],
    ) -> Graph:
        last: dict[str, int] = {}
        for i, node in enumerate(raw):
            for name in _reads(node):
                last[name] = i
        keep_out = set(outputs)
        nodes = []
        for i, node in enumerate(raw):
            free = tuple(sorted(n for n in _reads(node) if last[n] == i and n not in keep_out))
            nodes.append(Node(node.op, node.name, node.fn, node.scoped, node.inputs, node.outputs, node.attrs, free))
        used = set(last) | keep_out
        constants = {name: self._keep(value) for name, value in known.items() if name in used}
        outer = frozenset(n for node in raw for n in _reads(node) if n not in defined)
        return Graph(g.name, tuple(i.name for i in g.input), outputs, tuple(nodes), constants, outer)

    def check(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            raise UnsupportedOp(
                "onnxkit.pytorch cannot import this model: unsupported " + "; ".join(self.problems[:5]) + more
            )
