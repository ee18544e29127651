"""Shape, indexing and data-movement ONNX ops: one function per op, named as the op.

Shapes travel as int64 tensors, as in ONNX; they are read back to Python ints only where torch
needs them, which keeps every shape dynamic: a new batch or sequence length needs no reload.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx import TensorProto
from torch import Tensor

DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT64: torch.int64,
    TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16,
    TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8,
    TensorProto.UINT16: torch.uint16,
    TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
}


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _index(x: Tensor, indices: Tensor, axis: int) -> Tensor:
    # ONNX indices may count from the end.
    return torch.where(indices < 0, indices + x.shape[axis], indices)


def Identity(x: Tensor) -> Tensor:
    return x


def Constant(
    value: Tensor | None = None,
    value_float: float | None = None,
    value_floats: list[float] | None = None,
    value_int: int | None = None,
    value_ints: list[int] | None = None,
) -> Tensor:
    if value is not None:
        return value
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32)
    if value_floats is not None:
        return torch.tensor(value_floats, dtype=torch.float32)
    if value_int is not None:
        return torch.tensor(value_int, dtype=torch.int64)
    if value_ints is not None:
        return torch.tensor(value_ints, dtype=torch.int64)
    raise ValueError("Constant node has none of value, value_float(s), value_int(s)")


def Cast(x: Tensor, to: int, saturate: int = 1) -> Tensor:
    return x.to(DTYPES[to])


def CastLike(x: Tensor, like: Tensor, saturate: int = 1) -> Tensor:
    return x.to(like.dtype)


def Shape(x: Tensor, start: int = 0, end: int | None = None) -> Tensor:
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


def Size(x: Tensor) -> Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


def Reshape(x: Tensor, shape: Tensor, allowzero: int = 0) -> Tensor:
    dims = _ints(shape)
    if not allowzero:  # 0 means "keep this dimension of the input"
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def Flatten(x: Tensor, axis: int = 1) -> Tensor:
    axis = axis + x.ndim if axis < 0 else axis  # axis == ndim is allowed
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def Transpose(x: Tensor, perm: list[int] | None = None) -> Tensor:
    return x.permute(perm if perm is not None else list(reversed(range(x.ndim))))


def Squeeze(x: Tensor, axes: list[int] | None = None) -> Tensor:
    if not axes:
        return x.squeeze()
    return x.squeeze(tuple(axes))


def Squeeze_13(x: Tensor, axes: Tensor | None = None) -> Tensor:
    return Squeeze(x, _ints(axes))


def Unsqueeze(x: Tensor, axes: list[int]) -> Tensor:
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def Unsqueeze_13(x: Tensor, axes: Tensor) -> Tensor:
    return Unsqueeze(x, _ints(axes))


def Concat(*xs: Tensor, axis: int) -> Tensor:
    return torch.cat(xs, dim=axis)


def Split(x: Tensor, split: list[int] | None = None, axis: int = 0, num_outputs: int = 1) -> tuple[Tensor, ...]:
    # num_outputs: the attribute since opset 18; for older opsets the loader fills in the output count.
    if split:
        return tuple(torch.split(x, split, dim=axis))
    return tuple(torch.split(x, math.ceil(x.shape[axis] / num_outputs), dim=axis))


def Split_13(x: Tensor, split: Tensor | None = None, axis: int = 0, num_outputs: int = 1) -> tuple[Tensor, ...]:
    return Split(x, _ints(split), axis, num_outputs)


def Slice(x: Tensor, starts: list[int], ends: list[int], axes: list[int] | None = None) -> Tensor:
    return _slice(x, starts, ends, axes or list(range(len(starts))), [1] * len(starts))


def Slice_10(
    x: Tensor, starts: Tensor, ends: Tensor, axes: Tensor | None = None, steps: Tensor | None = None
) -> Tensor:
    s, e = _ints(starts), _ints(ends)
    return _slice(x, s, e, _ints(axes) or list(range(len(s))), _ints(steps) or [1] * len(s))


def _slice(x: Tensor, starts: list[int], ends: list[int], axes: list[int], steps: list[int]) -> Tensor:
    index: list[slice] = [slice(None)] * x.ndim
    backwards: list[tuple[int, int, int, int]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=False):
        axis %= x.ndim
        n = x.shape[axis]
        start = start + n if start < 0 else start
        end = end + n if end < 0 else end
        if step > 0:
            index[axis] = slice(min(max(start, 0), n), min(max(end, 0), n), step)
        else:  # torch has no negative-step slicing: gather the indices instead
            backwards.append((axis, min(max(start, 0), n - 1), min(max(end, -1), n - 1), step))
    y = x[tuple(index)]
    for axis, start, end, step in backwards:
        y = torch.index_select(y, axis, torch.arange(start, end, step, device=x.device))
    return y


def Gather(x: Tensor, indices: Tensor, axis: int = 0) -> Tensor:
    axis %= x.ndim
    if indices.ndim == 0:
        i = int(indices.item())
        return x.select(axis, i + x.shape[axis] if i < 0 else i)
    out = torch.index_select(x, axis, _index(x, indices, axis).reshape(-1))
    return out.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1 :])


def GatherElements(x: Tensor, indices: Tensor, axis: int = 0) -> Tensor:
    return torch.gather(x, axis, _index(x, indices, axis % x.ndim))


def GatherND(x: Tensor, indices: Tensor, batch_dims: int = 0) -> Tensor:
    k = indices.shape[-1]
    lead = x.shape[:batch_dims]
    xb = x.reshape(math.prod(lead), *x.shape[batch_dims:])
    ib = indices.reshape(xb.shape[0], -1, k)
    ib = torch.where(ib < 0, ib + torch.tensor(xb.shape[1 : k + 1], device=ib.device), ib)
    rows = torch.arange(xb.shape[0], device=x.device).unsqueeze(1)
    out = xb[(rows, *(ib[..., j] for j in range(k)))]
    return out.reshape(*lead, *indices.shape[batch_dims:-1], *x.shape[batch_dims + k :])


def ScatterND(x: Tensor, indices: Tensor, updates: Tensor, reduction: str = "none") -> Tensor:
    if reduction not in ("none", "add"):
        raise NotImplementedError(f"ScatterND reduction {reduction!r}: only 'none' and 'add' are supported")
    idx = tuple(indices[..., j] for j in range(indices.shape[-1]))
    return x.index_put(idx, updates, accumulate=reduction == "add")


def ScatterElements(x: Tensor, indices: Tensor, updates: Tensor, axis: int = 0, reduction: str = "none") -> Tensor:
    idx = _index(x, indices, axis % x.ndim)
    if reduction == "none":
        return torch.scatter(x, axis, idx, updates)
    mode = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[reduction]
    return torch.scatter_reduce(x, axis, idx, updates, mode, include_self=True)


def Expand(x: Tensor, shape: Tensor) -> Tensor:
    # ONNX broadcasts both ways: a 1 in `shape` keeps the input's dimension.
    target = _ints(shape)
    rank = max(x.ndim, len(target))
    mine = [1] * (rank - x.ndim) + list(x.shape)
    target = [1] * (rank - len(target)) + target
    return x.expand([t if m == 1 else m for m, t in zip(mine, target, strict=True)])


def Tile(x: Tensor, repeats: Tensor) -> Tensor:
    return x.repeat(_ints(repeats))


def ConstantOfShape(shape: Tensor, value: Tensor | None = None) -> Tensor:
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    return torch.full(_ints(shape), fill.reshape(-1)[0].item(), dtype=fill.dtype, device=shape.device)


def Range(start: Tensor, limit: Tensor, delta: Tensor) -> Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


def Pad(x: Tensor, pads: list[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    return _pad(x, pads, list(range(x.ndim)), mode, value)


def Pad_11(
    x: Tensor,
    pads: Tensor,
    constant_value: Tensor | None = None,
    axes: Tensor | None = None,
    mode: str = "constant",
) -> Tensor:
    value = 0.0 if constant_value is None or constant_value.numel() == 0 else float(constant_value.item())
    return _pad(x, _ints(pads), [a % x.ndim for a in _ints(axes)] or list(range(x.ndim)), mode, value)


def _pad(x: Tensor, pads: list[int], axes: list[int], mode: str, value: float) -> Tensor:
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    first = next((i for i in range(x.ndim) if begin[i] or end[i]), x.ndim)
    torch_pads: list[int] = []
    for axis in reversed(range(first, x.ndim)):  # torch lists pads from the last dimension backwards
        torch_pads += [begin[axis], end[axis]]
    if not torch_pads:
        return x
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    return F.pad(x, torch_pads, mode=torch_mode)


def Trilu(x: Tensor, k: Tensor | None = None, upper: int = 1) -> Tensor:
    diagonal = 0 if k is None else int(k.item())
    return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)


def OneHot(indices: Tensor, depth: Tensor, values: Tensor, axis: int = -1) -> Tensor:
    d = int(depth.reshape(-1)[0].item())
    idx = indices.long()
    hot = F.one_hot(torch.where(idx < 0, idx + d, idx), d).bool()
    hot = hot.movedim(-1, axis % (indices.ndim + 1))
    return torch.where(hot, values[1], values[0])


def NonZero(x: Tensor) -> Tensor:
    return torch.nonzero(x).t()


def DepthToSpace(x: Tensor, blocksize: int, mode: str = "DCR") -> Tensor:
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


def SpaceToDepth(x: Tensor, blocksize: int) -> Tensor:
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)
