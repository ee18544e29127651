"""Convolution, normalisation, pooling and resizing ONNX ops: one function per op, named as the op."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from onnxkit.pytorch.ops_tensor import _ints


def _spatial_pads(
    x: Tensor,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int] | None,
    auto_pad: str,
) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial dimension, resolving SAME_UPPER / SAME_LOWER."""
    n = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=False):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return begin, end
    if auto_pad == "VALID" or not pads:
        return [0] * n, [0] * n
    return list(pads[:n]), list(pads[n:])


def _torch_pads(begin: list[int], end: list[int]) -> list[int]:
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=False):
        out += [b, e]
    return out


_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T: dict[int, Callable[..., Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}
_MAX_POOL: dict[int, Callable[..., Any]] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL: dict[int, Callable[..., Tensor]] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def Conv(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    n = w.ndim - 2
    kernel = kernel_shape or list(w.shape[2:])
    strides, dilations = strides or [1] * n, dilations or [1] * n
    begin, end = _spatial_pads(x, kernel, strides, dilations, pads, auto_pad)
    if begin != end:  # torch pads symmetrically only: pad first, then convolve unpadded
        x, begin = F.pad(x, _torch_pads(begin, end)), [0] * n
    return _CONV[n](x, w, b, strides, begin, dilations, group)


def ConvTranspose(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    output_padding: list[int] | None = None,
    output_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    n = w.ndim - 2
    kernel_shape or list(w.shape[2:])
    strides, dilations = strides or [1] * n, dilations or [1] * n
    extra = output_padding or [0] * n
    # Convolve without padding, then crop: this covers asymmetric pads and output_shape alike.
    y = _CONV_T[n](x, w, b, strides, 0, extra, group, dilations)
    full = list(y.shape[2:])
    if output_shape:
        totals = [f - o for f, o in zip(full, output_shape[-n:], strict=False)]
        half = [t // 2 for t in totals]
        if auto_pad == "SAME_UPPER":
            begin, end = half, [t - h for t, h in zip(totals, half, strict=False)]
        else:
            begin, end = [t - h for t, h in zip(totals, half, strict=False)], half
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [f - size * s for f, size, s in zip(full, x.shape[2:], strides, strict=False)]
        half = [t // 2 for t in totals]
        rest = [t - h for t, h in zip(totals, half, strict=False)]
        begin, end = (half, rest) if auto_pad == "SAME_UPPER" else (rest, half)
    else:
        begin, end = (list(pads[:n]), list(pads[n:])) if pads else ([0] * n, [0] * n)
    index = [slice(None), slice(None)] + [slice(bg, f - e) for bg, e, f in zip(begin, end, full, strict=False)]
    return y[tuple(index)]


def BatchNormalization(
    x: Tensor,
    scale: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    training_mode: int = 0,
) -> Tensor:
    # The stored statistics are used in training too, written out so that mean and var get
    # gradients like every other parameter (F.batch_norm treats them as non-differentiable).
    shape = [1, -1] + [1] * (x.ndim - 2)
    inv = scale.reshape(shape) * torch.rsqrt(var.reshape(shape) + epsilon)
    return (x - mean.reshape(shape)) * inv + bias.reshape(shape)


def InstanceNormalization(x: Tensor, scale: Tensor, bias: Tensor, epsilon: float = 1e-5) -> Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


def LayerNormalization(
    x: Tensor,
    scale: Tensor,
    bias: Tensor | None = None,
    axis: int = -1,
    epsilon: float = 1e-5,
    stash_type: int = 1,
) -> Tensor:
    shape = x.shape[axis % x.ndim :]
    if scale.shape == shape and (bias is None or bias.shape == shape):
        return F.layer_norm(x, shape, scale, bias, epsilon)
    dims = list(range(axis % x.ndim, x.ndim))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + epsilon) * scale
    return y + bias if bias is not None else y


def GroupNormalization_18(
    x: Tensor, scale: Tensor, bias: Tensor, num_groups: int, epsilon: float = 1e-5, stash_type: int = 1
) -> Tensor:
    # Opset 18 gives scale and bias per group (opset 21 changed them to per channel).
    n = x.shape[0]
    g = x.reshape(n, num_groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = g.var(-1, unbiased=False, keepdim=True)
    g = (g - mean) * torch.rsqrt(var + epsilon) * scale.reshape(1, -1, 1) + bias.reshape(1, -1, 1)
    return g.reshape(x.shape)


def GroupNormalization_21(
    x: Tensor, scale: Tensor, bias: Tensor, num_groups: int, epsilon: float = 1e-5, stash_type: int = 1
) -> Tensor:
    return F.group_norm(x, num_groups, scale, bias, epsilon)


def LpNormalization(x: Tensor, axis: int = -1, p: int = 2) -> Tensor:
    norm: Tensor = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
    return x / norm


def MaxPool(
    x: Tensor,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    storage_order: int = 0,
    strides: list[int] | None = None,
) -> Tensor:
    assert kernel_shape is not None, "MaxPool needs kernel_shape"
    n = len(kernel_shape)
    strides, dilations = strides or [1] * n, dilations or [1] * n
    begin, end = _spatial_pads(x, kernel_shape, strides, dilations, pads, auto_pad)
    if begin != end:
        x, begin = F.pad(x, _torch_pads(begin, end), value=-math.inf), [0] * n
    out: Tensor = _MAX_POOL[n](x, kernel_shape, strides, begin, dilations, bool(ceil_mode))
    return out


def AveragePool(
    x: Tensor,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Tensor:
    assert kernel_shape is not None, "AveragePool needs kernel_shape"
    n = len(kernel_shape)
    strides = strides or [1] * n
    if dilations and any(d != 1 for d in dilations):
        raise NotImplementedError(f"AveragePool with dilations {dilations}: only 1 is supported")
    begin, end = _spatial_pads(x, kernel_shape, strides, [1] * n, pads, auto_pad)
    if begin != end:
        if not count_include_pad:
            raise NotImplementedError(f"AveragePool with asymmetric pads {begin}/{end} and count_include_pad=0")
        x, begin = F.pad(x, _torch_pads(begin, end)), [0] * n
    return _AVG_POOL[n](x, kernel_shape, strides, begin, bool(ceil_mode), bool(count_include_pad))


def GlobalAveragePool(x: Tensor) -> Tensor:
    return x.mean(dim=list(range(2, x.ndim)), keepdim=True)


def GlobalMaxPool(x: Tensor) -> Tensor:
    return x.amax(dim=list(range(2, x.ndim)), keepdim=True)


_INTERPOLATE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def Resize_10(x: Tensor, scales: Tensor, mode: str = "nearest") -> Tensor:
    return Resize_11(x, None, scales, coordinate_transformation_mode="asymmetric", mode=mode, nearest_mode="floor")


def Upsample_9(x: Tensor, scales: Tensor, mode: str = "nearest") -> Tensor:
    return Resize_10(x, scales, mode)


def Resize_11(
    x: Tensor,
    roi: Tensor | None = None,
    scales: Tensor | None = None,
    sizes: Tensor | None = None,
    antialias: int = 0,
    axes: list[int] | None = None,
    coordinate_transformation_mode: str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: str = "stretch",
    mode: str = "nearest",
    nearest_mode: str = "round_prefer_floor",
) -> Tensor:
    n = x.ndim - 2
    if axes is not None and sorted(a % x.ndim for a in axes) != list(range(2, x.ndim)):
        raise NotImplementedError(f"Resize over axes {axes}: only the spatial axes are supported")
    spatial_scales = [float(s) for s in scales.reshape(-1).tolist()][-n:] if scales is not None else []
    spatial_sizes = _ints(sizes)[-n:] if sizes is not None and sizes.numel() else []
    kwargs: dict[str, Any] = (
        {"size": spatial_sizes} if spatial_sizes else {"scale_factor": spatial_scales, "recompute_scale_factor": False}
    )
    ctm = coordinate_transformation_mode
    if mode == "nearest":
        if ctm == "asymmetric" and nearest_mode == "floor":
            return F.interpolate(x, mode="nearest", **kwargs)
        if ctm in ("half_pixel", "pytorch_half_pixel") and nearest_mode == "round_prefer_ceil":
            return F.interpolate(x, mode="nearest-exact", **kwargs)
    elif mode in ("linear", "cubic") and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if mode == "cubic" and (n != 2 or cubic_coeff_a != -0.75 or exclude_outside):
            raise NotImplementedError(f"Resize cubic with a={cubic_coeff_a}, exclude_outside={exclude_outside}")
        torch_mode = "bicubic" if mode == "cubic" else _INTERPOLATE_MODES[n]
        return F.interpolate(
            x, mode=torch_mode, align_corners=ctm == "align_corners", antialias=bool(antialias), **kwargs
        )
    raise NotImplementedError(
        f"Resize mode={mode!r} coordinate_transformation_mode={ctm!r} nearest_mode={nearest_mode!r} is not supported"
    )
