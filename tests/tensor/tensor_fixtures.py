"""Tiny tensor models made with onnx.helper, and helpers the tensor tests share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 8)).astype(np.float32)
B1 = RNG.standard_normal(8).astype(np.float32)
W2 = RNG.standard_normal((8, 3)).astype(np.float32)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def mlp(path: Path, scale: float = 1.0) -> Path:
    """x FP32 [N, 4] -> logits FP32 [N, 3]: relu(x W1 + b1) W2 * scale."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["o"]),
        helper.make_node("Mul", ["o", "scale"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(W1, "w1"),
        numpy_helper.from_array(B1, "b1"),
        numpy_helper.from_array(W2, "w2"),
        numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return _save(graph, path)


def mlp_reference(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    out: np.ndarray = (np.maximum(x @ W1 + B1, 0) @ W2 * scale).astype(np.float32)
    return out


def int_model(path: Path) -> Path:
    """ids INT64 [N, L] -> doubled INT64 [N, L], total INT64 [N] (row sums)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["ids", "ids"], ["doubled"]),
            helper.make_node("ReduceSum", ["ids", "axes"], ["total"], keepdims=0),
        ],
        "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])],
        [
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N", "L"]),
            helper.make_tensor_value_info("total", TensorProto.INT64, ["N"]),
        ],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


def string_model(path: Path) -> Path:
    """text STRING [N] -> same STRING [N] (Identity) and upper STRING [N] (StringNormalizer)."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["text"], ["same"]),
            helper.make_node("StringNormalizer", ["text"], ["upper"], case_change_action="UPPER", locale="C"),
        ],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [
            helper.make_tensor_value_info("same", TensorProto.STRING, ["N"]),
            helper.make_tensor_value_info("upper", TensorProto.STRING, ["N"]),
        ],
    )
    return _save(graph, path)


def fp16_model(path: Path) -> Path:
    """a FP16 [N, 2] -> y FP16 [N, 2] = a * 2."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "two"], ["y"])],
        "half",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT16, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 2])],
        [numpy_helper.from_array(np.array(2, dtype=np.float16), "two")],
    )
    return _save(graph, path)


RepoFactory = Callable[..., Path]


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    port: int
    grpc_port: int

    @property
    def http_address(self) -> str:  # what tritonclient.http wants
        return self.url.removeprefix("http://")

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


LABELS = ["cat", "dog", "bird"]
MLP_CONFIG = f"max_batch_size: 8\ndynamic_batching:\n  max_queue_delay_ms: 0\nlabels: {LABELS}\n"


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            body = line[len(name) :]
            if all(f'{k}="{v}"' in body for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
