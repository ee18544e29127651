"""Recurrent ONNX ops (LSTM, GRU, RNN), as torch.onnx.export emits them for nn.LSTM / nn.GRU / nn.RNN.

Written out step by step (input projections for all steps at once, then one matmul per step), so
that W, R and B are ordinary parameters with gradients, whatever their ONNX gate order.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _directions(direction: str) -> list[bool]:
    """For each direction, whether it runs backwards in time."""
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def _check(
    op: str,
    activations: list[str] | None,
    default: list[str],
    clip: float | None,
    sequence_lens: Tensor | None,
    steps: int,
) -> None:
    if activations and [a.lower() for a in activations] != [a.lower() for a in default] * (
        len(activations) // len(default)
    ):
        raise NotImplementedError(f"{op} with activations {activations}: only the defaults {default} are supported")
    if clip is not None:
        raise NotImplementedError(f"{op} with clip={clip} is not supported")
    if sequence_lens is not None and any(int(n) != steps for n in sequence_lens.reshape(-1).tolist()):
        raise NotImplementedError(f"{op} with sequence_lens shorter than the sequence ({steps}) is not supported")


def _start(state: Tensor | None, d: int, batch: int, hidden: int, like: Tensor) -> Tensor:
    return state[d] if state is not None else like.new_zeros(batch, hidden)


def _finish(outputs: list[list[Tensor]], finals: list[list[Tensor]], layout: int) -> tuple[Tensor, ...]:
    y = torch.stack([torch.stack(o) for o in outputs], 1)  # [seq, directions, batch, hidden]
    states = [torch.stack(f) for f in finals]  # each [directions, batch, hidden]
    if layout:  # batch first: Y [batch, seq, directions, hidden], states [batch, directions, hidden]
        return (y.permute(2, 0, 1, 3), *(s.transpose(0, 1) for s in states))
    return (y, *states)


def LSTM(
    x: Tensor,
    w: Tensor,
    r: Tensor,
    b: Tensor | None = None,
    sequence_lens: Tensor | None = None,
    initial_h: Tensor | None = None,
    initial_c: Tensor | None = None,
    p: Tensor | None = None,
    activation_alpha: list[float] | None = None,
    activation_beta: list[float] | None = None,
    activations: list[str] | None = None,
    clip: float | None = None,
    direction: str = "forward",
    hidden_size: int = 0,
    input_forget: int = 0,
    layout: int = 0,
) -> tuple[Tensor, ...]:
    x = x.transpose(0, 1) if layout else x
    steps, batch, _ = x.shape
    _check("LSTM", activations, ["Sigmoid", "Tanh", "Tanh"], clip, sequence_lens, steps)
    if input_forget:
        raise NotImplementedError("LSTM with input_forget=1 is not supported")
    hidden = hidden_size or r.shape[-1]
    if initial_h is not None and layout:
        initial_h = initial_h.transpose(0, 1)
    if initial_c is not None and layout:
        initial_c = initial_c.transpose(0, 1)
    outputs: list[list[Tensor]] = []
    finals: list[list[Tensor]] = [[], []]
    for d, backwards in enumerate(_directions(direction)):
        projected = x @ w[d].T  # ONNX gate order: input, output, forget, cell
        if b is not None:
            projected = projected + b[d, : 4 * hidden] + b[d, 4 * hidden :]
        h = _start(initial_h, d, batch, hidden, x)
        c = _start(initial_c, d, batch, hidden, x)
        peep = p[d].chunk(3) if p is not None else None  # input, output, forget
        out: list[Tensor] = [x] * steps
        for t in reversed(range(steps)) if backwards else range(steps):
            i, o, f, g = (projected[t] + h @ r[d].T).chunk(4, -1)
            if peep is not None:
                i, f = i + peep[0] * c, f + peep[2] * c
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if peep is not None:
                o = o + peep[1] * c
            h = torch.sigmoid(o) * torch.tanh(c)
            out[t] = h
        outputs.append(out)
        finals[0].append(h)
        finals[1].append(c)
    return _finish(outputs, finals, layout)


def GRU(
    x: Tensor,
    w: Tensor,
    r: Tensor,
    b: Tensor | None = None,
    sequence_lens: Tensor | None = None,
    initial_h: Tensor | None = None,
    activation_alpha: list[float] | None = None,
    activation_beta: list[float] | None = None,
    activations: list[str] | None = None,
    clip: float | None = None,
    direction: str = "forward",
    hidden_size: int = 0,
    layout: int = 0,
    linear_before_reset: int = 0,
) -> tuple[Tensor, ...]:
    x = x.transpose(0, 1) if layout else x
    steps, batch, _ = x.shape
    _check("GRU", activations, ["Sigmoid", "Tanh"], clip, sequence_lens, steps)
    hidden = hidden_size or r.shape[-1]
    if initial_h is not None and layout:
        initial_h = initial_h.transpose(0, 1)
    outputs: list[list[Tensor]] = []
    finals: list[list[Tensor]] = [[]]
    for d, backwards in enumerate(_directions(direction)):
        projected = x @ w[d].T  # ONNX gate order: update, reset, hidden
        if b is not None:
            projected = projected + b[d, : 3 * hidden]
        r_bias = b[d, 3 * hidden :] if b is not None else x.new_zeros(3 * hidden)
        rz, rr, rh = r[d].chunk(3)
        bz, br, bh = r_bias.chunk(3)
        h = _start(initial_h, d, batch, hidden, x)
        out: list[Tensor] = [x] * steps
        for t in reversed(range(steps)) if backwards else range(steps):
            xz, xr, xh = projected[t].chunk(3, -1)
            z = torch.sigmoid(xz + h @ rz.T + bz)
            reset = torch.sigmoid(xr + h @ rr.T + br)
            if linear_before_reset:
                candidate = torch.tanh(xh + reset * (h @ rh.T + bh))
            else:
                candidate = torch.tanh(xh + (reset * h) @ rh.T + bh)
            h = (1 - z) * candidate + z * h
            out[t] = h
        outputs.append(out)
        finals[0].append(h)
    return _finish(outputs, finals, layout)


def RNN(
    x: Tensor,
    w: Tensor,
    r: Tensor,
    b: Tensor | None = None,
    sequence_lens: Tensor | None = None,
    initial_h: Tensor | None = None,
    activation_alpha: list[float] | None = None,
    activation_beta: list[float] | None = None,
    activations: list[str] | None = None,
    clip: float | None = None,
    direction: str = "forward",
    hidden_size: int = 0,
    layout: int = 0,
) -> tuple[Tensor, ...]:
    x = x.transpose(0, 1) if layout else x
    steps, batch, _ = x.shape
    relu = bool(activations) and {a.lower() for a in activations or []} == {"relu"}
    _check("RNN", None if relu else activations, ["Tanh"], clip, sequence_lens, steps)
    act = torch.relu if relu else torch.tanh
    hidden = hidden_size or r.shape[-1]
    if initial_h is not None and layout:
        initial_h = initial_h.transpose(0, 1)
    outputs: list[list[Tensor]] = []
    finals: list[list[Tensor]] = [[]]
    for d, backwards in enumerate(_directions(direction)):
        projected = x @ w[d].T
        if b is not None:
            projected = projected + b[d, :hidden] + b[d, hidden:]
        h = _start(initial_h, d, batch, hidden, x)
        out: list[Tensor] = [x] * steps
        for t in reversed(range(steps)) if backwards else range(steps):
            h = act(projected[t] + h @ r[d].T)
            out[t] = h
        outputs.append(out)
        finals[0].append(h)
    return _finish(outputs, finals, layout)
