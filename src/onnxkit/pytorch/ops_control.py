"""ONNX ops that need the interpreter: control flow (If, Loop) and Dropout (train/eval mode).

These take a ``Scope`` as their first argument; the loader recognises them by that parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from onnxkit.pytorch.ir import Graph


class Scope(Protocol):
    training: bool

    def run(self, graph: Graph, inputs: list[Tensor]) -> list[Tensor]: ...


def Dropout(
    scope: Scope,
    x: Tensor,
    ratio: Tensor | float | None = None,
    training_mode: Tensor | None = None,
    seed: int | None = None,
) -> Tensor:
    # The graph's own training_mode is what the exporter saw (always off); module.train() decides.
    p = 0.5 if ratio is None else float(ratio) if isinstance(ratio, float) else float(ratio.item())
    return F.dropout(x, p, training=scope.training) if p > 0 else x


def If(scope: Scope, cond: Tensor, then_branch: Graph, else_branch: Graph) -> tuple[Tensor, ...]:
    return tuple(scope.run(then_branch if bool(cond.item()) else else_branch, []))


def Loop(
    scope: Scope, trip_count: Tensor | None, cond: Tensor | None, *carried: Tensor, body: Graph
) -> tuple[Tensor, ...]:
    limit = int(trip_count.item()) if trip_count is not None else None
    keep_going = bool(cond.item()) if cond is not None else True
    state = list(carried)
    scans: list[list[Tensor]] = []
    i = 0
    device = next((t.device for t in (trip_count, cond, *carried) if t is not None), None)
    while keep_going and (limit is None or i < limit):
        step = [torch.tensor(i, dtype=torch.int64, device=device), torch.tensor(keep_going, device=device)]
        out = scope.run(body, [*step, *state])
        keep_going = bool(out[0].item())
        state = out[1 : 1 + len(state)]
        for k, value in enumerate(out[1 + len(state) :]):
            if k == len(scans):
                scans.append([])
            scans[k].append(value)
        i += 1
    n_scans = len(body.outputs) - 1 - len(state)
    if not scans and n_scans:
        raise NotImplementedError("Loop ran zero iterations: the shape of its scan outputs is unknown")
    return (*state, *(torch.stack(s) for s in scans))
