"""onnxruntime sessions, with the graph probed once at load into plain data.

The probe (names, dtypes, symbolic dims) is what metadata endpoints and request
validation both read.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxkit.errors import InvalidRequest, SupplyError
from onnxkit.types import Array

Dim = int | str | None

# ONNX tensor type strings as onnxruntime reports them -> numpy dtypes.
ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(np.object_),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[Dim, ...]

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d < 0 or d == s for d, s in zip(self.shape, shape, strict=True))


@dataclass(frozen=True)
class GraphInfo:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise SupplyError(f"tensor {arg.name!r} has type {arg.type}, which onnxkit does not serve")
    dims: list[Dim] = []
    for d in arg.shape:
        dims.append(d if isinstance(d, int | str) else None)
    return TensorSpec(arg.name, dtype, tuple(dims))


def _extensions_library() -> str | None:
    """onnxruntime-extensions' custom-op library (fused tokenizers), found by path: importing the
    package would import torch and transformers, which the serving process never loads."""
    spec = importlib.util.find_spec("onnxruntime_extensions")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("_extensions_pydll.*"))
        libs = [f for f in found if f.suffix in (".so", ".pyd", ".dylib")]
        if libs:
            return str(libs[0])
    return None


def session_options(threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    lib = _extensions_library()
    if lib:
        so.register_custom_ops_library(lib)
    return so


class OrtSession:
    """One onnxruntime InferenceSession plus its probed graph."""

    def __init__(self, path: Path, *, threads: int = 0, providers: Sequence[str] | None = None) -> None:
        self.path = path
        try:
            self.session = ort.InferenceSession(
                str(path),
                sess_options=session_options(threads),
                providers=list(providers) if providers else ["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SupplyError(f"cannot load {path}: {exc}") from exc
        self.info = GraphInfo(
            inputs=tuple(_spec(a) for a in self.session.get_inputs()),
            outputs=tuple(_spec(a) for a in self.session.get_outputs()),
        )

    def run(self, feeds: Mapping[str, Array], outputs: Sequence[str] | None = None) -> dict[str, Array]:
        names = list(outputs) if outputs else [o.name for o in self.info.outputs]
        try:
            values = self.session.run(names, dict(feeds))
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ValueError) as exc:
            raise InvalidRequest(f"model rejected the inputs: {exc}") from exc
        return dict(zip(names, values, strict=True))

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())
