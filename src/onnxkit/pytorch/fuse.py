"""Load-time fusions, for speed only: MatMul + bias Add -> one addmm; the erf form of GELU -> F.gelu.

Exporters spell a Linear layer as MatMul then Add, and GELU as five elementwise nodes; on CPU the
separate passes over [batch, seq, hidden] tensors cost ~20% of a BERT forward. A pattern fuses only
when it matches exactly (constant values, shapes, and intermediates read by nobody else), so the
fused graph computes the same function of the same parameters.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from onnxkit.pytorch.ir import Node

Lookup = Callable[[str], Tensor | None]


def linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    if x.ndim == 2:
        return torch.addmm(b, x, w)
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[1])


def gelu(x: Tensor) -> Tensor:
    return F.gelu(x)


def _scalar(value: Tensor | None, expected: float) -> bool:
    return value is not None and value.numel() == 1 and math.isclose(float(value), expected, rel_tol=1e-6)


def _other(node: Node, name: str) -> str | None:
    """The other input of a binary node that reads ``name``."""
    a, b = (*node.inputs, "", "")[:2]
    return b if a == name else a if b == name else None


def fuse(nodes: list[Node], value: Lookup, reads: Counter[str], weights: set[str]) -> list[Node]:
    """``reads`` counts every read of a value (inputs, subgraphs, graph outputs); ``weights`` are
    initializers, whose values ``value`` knows."""
    by_input: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            by_input.setdefault(name, []).append(i)

    def only_reader(name: str) -> int | None:
        found = by_input.get(name, [])
        return found[0] if reads[name] == 1 and len(found) == 1 else None

    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for i, node in enumerate(nodes):
        if i in dropped or node.op not in ("MatMul", "Erf"):
            continue
        if node.op == "MatMul":
            found = _linear(i, nodes, value, weights, only_reader)
        else:
            found = _gelu(i, nodes, value, only_reader)
        if found is not None:
            fused, used = found
            if not used & dropped:
                replaced[max(used)] = fused
                dropped |= used
    return [replaced.get(i, n) for i, n in enumerate(nodes) if i not in dropped or i in replaced]


def _linear(
    i: int, nodes: list[Node], value: Lookup, weights: set[str], only_reader: Callable[[str], int | None]
) -> tuple[Node, set[int]] | None:
    matmul = nodes[i]
    x, w = matmul.inputs
    j = only_reader(matmul.outputs[0])
    if w not in weights or j is None or nodes[j].op != "Add":
        return None
    b = _other(nodes[j], matmul.outputs[0])
    w_value, b_value = value(w), value(b) if b else None
    if b not in weights or w_value is None or b_value is None or w_value.ndim != 2:
        return None
    if b_value.ndim != 1 or b_value.shape[0] != w_value.shape[1]:
        return None
    add = nodes[j]
    node = Node("MatMul+Add", f"{matmul.name}+{add.name}", linear, False, (x, w, b), add.outputs, {})
    return node, {i, j}


def _gelu(
    i: int, nodes: list[Node], value: Lookup, only_reader: Callable[[str], int | None]
) -> tuple[Node, set[int]] | None:
    # x / sqrt(2) (or x * 1/sqrt(2)) -> Erf -> + 1 -> then * x and * 0.5, in either order
    erf = nodes[i]
    scaled = next((k for k, n in enumerate(nodes) if erf.inputs[0] in n.outputs), None)
    if scaled is None or only_reader(erf.inputs[0]) != i:
        return None
    pre = nodes[scaled]
    divided = pre.op == "Div" and _scalar(value(pre.inputs[1]), math.sqrt(2))
    if divided or (pre.op == "Mul" and _scalar(value(pre.inputs[1]), 1 / math.sqrt(2))):
        x = pre.inputs[0]
    elif pre.op == "Mul" and _scalar(value(pre.inputs[0]), 1 / math.sqrt(2)):
        x = pre.inputs[1]
    else:
        return None
    chain = [scaled, i]
    current = erf.outputs[0]
    add = only_reader(current)
    if add is None or nodes[add].op != "Add" or not _scalar(value(_other(nodes[add], current) or ""), 1.0):
        return None
    chain.append(add)
    current = nodes[add].outputs[0]
    remaining = {"x", "half"}
    for _ in range(2):
        k = only_reader(current)
        if k is None or nodes[k].op != "Mul":
            return None
        other = _other(nodes[k], current) or ""
        if other == x and "x" in remaining:
            remaining.discard("x")
        elif _scalar(value(other), 0.5) and "half" in remaining:
            remaining.discard("half")
        else:
            return None
        chain.append(k)
        current = nodes[k].outputs[0]
    last = nodes[chain[-1]]
    return Node("Gelu(erf)", f"{pre.name}..{last.name}", gelu, False, (x,), last.outputs, {}), set(chain)
