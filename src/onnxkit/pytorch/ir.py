"""The parsed graph as plain data: nodes bound to op functions (shared by graph.py and fuse.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OpFn = Callable[..., Any]  # one ONNX op as a plain function of tensors (and attributes)


@dataclass(frozen=True)
class Node:
    op: str
    name: str
    fn: OpFn
    scoped: bool  # takes the interpreter scope first (If, Loop, Dropout)
    inputs: tuple[str, ...]  # "" marks a missing optional input
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    free: tuple[str, ...] = ()  # values last read by this node, dropped once it ran


@dataclass(frozen=True)
class Graph:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    constants: dict[str, str]  # value name -> key in the module's constant store
    outer: frozenset[str] = field(default_factory=frozenset)  # names read from enclosing graphs
