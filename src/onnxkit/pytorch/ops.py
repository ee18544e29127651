"""The op table, built from the names of the op functions.

``Softmax`` applies from opset 1, ``Softmax_13`` from opset 13: a model at opset v gets the variant
with the largest suffix not above v.
"""

from __future__ import annotations

import inspect

from onnxkit.pytorch import ops_control, ops_math, ops_nn, ops_reduce, ops_rnn, ops_tensor
from onnxkit.pytorch.ir import OpFn

DEFAULT_DOMAINS = ("", "ai.onnx")


def _build() -> dict[str, list[tuple[int, OpFn]]]:
    table: dict[str, list[tuple[int, OpFn]]] = {}
    for module in (ops_math, ops_reduce, ops_tensor, ops_nn, ops_rnn, ops_control):
        for name, fn in vars(module).items():
            if name[:1].isupper() and inspect.isfunction(fn) and fn.__module__ == module.__name__:
                op, _, since = name.partition("_")
                table.setdefault(op, []).append((int(since) if since else 1, fn))
    return {op: sorted(variants, key=lambda v: v[0]) for op, variants in table.items()}


OPS = _build()


def lookup(op: str, domain: str, opset: int) -> OpFn | None:
    if domain not in DEFAULT_DOMAINS:
        return None
    chosen = None
    for since, fn in OPS.get(op, []):
        if since <= opset:
            chosen = fn
    return chosen


def takes_scope(fn: OpFn) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] == "scope"
