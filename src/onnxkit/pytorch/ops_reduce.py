"""Reduction ONNX ops (and the index-returning ArgMax/ArgMin/TopK, CumSum): one function per op.

Before opset 18 (13 for ReduceSum) the axes were an attribute; since, an optional input: the
plain name takes the attribute, the ``_18`` / ``_13`` variant the input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _ints(t: Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _reduce(
    fn: Callable[[Tensor, list[int], bool], Tensor],
    x: Tensor,
    axes: list[int] | None,
    keepdims: int,
    noop_with_empty_axes: int = 0,
) -> Tensor:
    if not axes:
        if noop_with_empty_axes:  # no reduction, but the elementwise part still applies (abs, square...)
            return fn(x.unsqueeze(0), [0], False)
        axes = list(range(x.ndim))
    return fn(x, axes, bool(keepdims))


def _sum(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.sum(x, dim=d, keepdim=k)


def _mean(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.mean(x, dim=d, keepdim=k)


def _max(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.amax(x, dim=d, keepdim=k)


def _min(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.amin(x, dim=d, keepdim=k)


def _prod(x: Tensor, d: list[int], k: bool) -> Tensor:
    for axis in sorted((a % x.ndim for a in d), reverse=True):
        x = torch.prod(x, dim=axis, keepdim=k)
    return x


def _l1(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.sum(x.abs(), dim=d, keepdim=k)


def _l2(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.sqrt(torch.sum(x * x, dim=d, keepdim=k))


def _sum_square(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.sum(x * x, dim=d, keepdim=k)


def _log_sum(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.log(torch.sum(x, dim=d, keepdim=k))


def _log_sum_exp(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.logsumexp(x, dim=d, keepdim=k)


def ReduceSum(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_sum, x, axes, keepdims)


def ReduceSum_13(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_sum, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceMean(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_mean, x, axes, keepdims)


def ReduceMean_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_mean, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceMax(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_max, x, axes, keepdims)


def ReduceMax_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_max, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceMin(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_min, x, axes, keepdims)


def ReduceMin_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_min, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceProd(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_prod, x, axes, keepdims)


def ReduceProd_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_prod, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceL1(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_l1, x, axes, keepdims)


def ReduceL1_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_l1, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceL2(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_l2, x, axes, keepdims)


def ReduceL2_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_l2, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceSumSquare(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_sum_square, x, axes, keepdims)


def ReduceSumSquare_18(
    x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Tensor:
    return _reduce(_sum_square, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceLogSum(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_log_sum, x, axes, keepdims)


def ReduceLogSum_18(x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0) -> Tensor:
    return _reduce(_log_sum, x, _ints(axes), keepdims, noop_with_empty_axes)


def ReduceLogSumExp(x: Tensor, axes: list[int] | None = None, keepdims: int = 1) -> Tensor:
    return _reduce(_log_sum_exp, x, axes, keepdims)


def ReduceLogSumExp_18(
    x: Tensor, axes: Tensor | None = None, keepdims: int = 1, noop_with_empty_axes: int = 0
) -> Tensor:
    return _reduce(_log_sum_exp, x, _ints(axes), keepdims, noop_with_empty_axes)


def ArgMax(x: Tensor, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Tensor:
    if select_last_index:
        flipped = torch.argmax(x.flip(axis), dim=axis, keepdim=bool(keepdims))
        return x.shape[axis] - 1 - flipped
    return torch.argmax(x, dim=axis, keepdim=bool(keepdims))


def ArgMin(x: Tensor, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Tensor:
    if select_last_index:
        flipped = torch.argmin(x.flip(axis), dim=axis, keepdim=bool(keepdims))
        return x.shape[axis] - 1 - flipped
    return torch.argmin(x, dim=axis, keepdim=bool(keepdims))


def CumSum(x: Tensor, axis: Tensor, exclusive: int = 0, reverse: int = 0) -> Tensor:
    dim = int(axis.item())
    y = x.flip(dim) if reverse else x
    out = torch.cumsum(y, dim=dim)
    if exclusive:
        out = out - y
    return out.flip(dim) if reverse else out


def TopK(x: Tensor, k: Tensor, axis: int = -1, largest: int = 1, sorted: int = 1) -> tuple[Tensor, Tensor]:
    values, indices = torch.topk(x, int(k.reshape(-1)[0].item()), dim=axis, largest=bool(largest), sorted=True)
    return values, indices
