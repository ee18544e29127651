"""An ONNX model as a torch.nn.Module: initializers become parameters and buffers, and forward
interprets the graph node by node, so shapes stay dynamic and autograd sees every op."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
import torch
from torch import Tensor, nn

from onnxkit.errors import InvalidRequest
from onnxkit.pytorch.graph import Parser, to_tensor, weight_names
from onnxkit.pytorch.ir import Graph
from onnxkit.pytorch.ops_tensor import DTYPES


class NodeFailed(InvalidRequest):
    pass


def _attribute_name(onnx_name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", onnx_name) or "_"
    if base[0].isdigit():
        base = "_" + base
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


class Scope:
    """One run of a graph: the values computed so far, visible to nested graphs (If, Loop)."""

    def __init__(self, store: Mapping[str, Tensor], training: bool, env: dict[str, Tensor]) -> None:
        self.store = store
        self.training = training
        self.env = env

    def run(self, graph: Graph, inputs: list[Tensor]) -> list[Tensor]:
        env = dict(self.env)
        env.update(zip(graph.inputs, inputs, strict=False))
        return Scope(self.store, self.training, env).interpret(graph)

    def interpret(self, graph: Graph) -> list[Tensor]:
        env = self.env
        for name, key in graph.constants.items():
            env[name] = self.store[key]
        for node in graph.nodes:
            args = [env[i] if i else None for i in node.inputs]
            try:
                out = node.fn(self, *args, **node.attrs) if node.scoped else node.fn(*args, **node.attrs)
            except Exception as exc:
                shapes = [tuple(a.shape) if a is not None else None for a in args]
                raise NodeFailed(f"node {node.name!r} ({node.op}) failed on inputs {shapes}: {exc}") from exc
            if isinstance(out, Tensor):
                env[node.outputs[0]] = out
            else:
                for name, value in zip(node.outputs, out, strict=False):
                    if name:
                        env[name] = value
            for name in node.free:
                del env[name]
        return [env[name] for name in graph.outputs]


class OnnxModule(nn.Module):
    """Weights (graph.weight_names) are parameters, other initializers buffers, each named after its
    ONNX initializer; ``initializer_names`` maps attribute name -> ONNX name exactly."""

    def __init__(self, model: onnx.ModelProto, *, fuse: bool = True) -> None:
        super().__init__()
        if model.functions:  # model-local functions (some exporters emit one per submodule): inline them
            model = onnx.inliner.inline_local_functions(model)
        g = model.graph
        initializers = {i.name: i for i in g.initializer}
        values = {name: to_tensor(proto) for name, proto in initializers.items()}
        parser = Parser(model, fuse=fuse)
        self.graph = parser.graph(g, weights=values)
        parser.check()
        self.opset = parser.opset
        declared = [i for i in g.input if i.name not in initializers]
        self.input_names = [i.name for i in declared]
        self.output_names = [o.name for o in g.output]
        self._input_dtypes = [DTYPES.get(i.type.tensor_type.elem_type) for i in declared]
        self.initializer_names: dict[str, str] = {}
        taken = set(dir(self))
        weights = weight_names(g)
        for onnx_name, value in values.items():
            attr = _attribute_name(onnx_name, taken)
            if onnx_name in weights:
                self.register_parameter(attr, nn.Parameter(value))
            else:
                self.register_buffer(attr, value)
            self.initializer_names[attr] = onnx_name
        self.constants = nn.Module()
        for key, value in parser.store.items():
            self.constants.register_buffer(key, value, persistent=False)
        # nanoGPT-style bookkeeping check: every initializer has exactly one home, same shape.
        homes = dict(self.named_parameters()) | dict(self.named_buffers())
        assert len(self.initializer_names) == len(initializers)
        for attr, onnx_name in self.initializer_names.items():
            assert tuple(homes[attr].shape) == tuple(initializers[onnx_name].dims), onnx_name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        env = self._bind(args, kwargs)
        for attr, onnx_name in self.initializer_names.items():
            env[onnx_name] = getattr(self, attr)
        store = dict(self.constants.named_buffers())
        outputs = Scope(store, self.training, env).interpret(self.graph)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Tensor]:
        if len(args) > len(self.input_names):
            raise InvalidRequest(f"model takes {len(self.input_names)} inputs {self.input_names}; got {len(args)}")
        given = dict(zip(self.input_names, args, strict=False))
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise InvalidRequest(f"unknown input {name!r}; the model's inputs are {self.input_names}")
            if name in given:
                raise InvalidRequest(f"input {name!r} given both by position and by name")
            given[name] = value
        missing = [n for n in self.input_names if n not in given]
        if missing:
            raise InvalidRequest(f"missing input(s) {missing}; the model's inputs are {self.input_names}")
        device = next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).device
        env: dict[str, Tensor] = {}
        for name, dtype in zip(self.input_names, self._input_dtypes, strict=False):
            value = given[name]
            tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
            env[name] = tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device)
        return env

    def extra_repr(self) -> str:
        nodes = len(self.graph.nodes)
        return f"inputs={self.input_names}, outputs={self.output_names}, opset={self.opset}, nodes={nodes}"


def load(path: str | Path, *, fuse: bool = True) -> OnnxModule:
    """Import an ONNX file (external data included) as a trainable torch module.

    fuse=False runs every ONNX node as written (no MatMul+Add or GELU fusion; slower, same results).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"ONNX model {str(path)!r} does not exist")
    model = onnx.load(str(path), load_external_data=True)
    return OnnxModule(model, fuse=fuse)
