"""Elementwise, logical and matrix ONNX ops: one function per op, named as the op.

A suffix ``_N`` marks the variant that opset N introduced (usually attributes moving to inputs).
Inputs arrive positionally (a missing optional input is ``None``), attributes as keywords.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

# --- arithmetic ---------------------------------------------------------------------------------


def Add(a: Tensor, b: Tensor) -> Tensor:
    return a + b


def Sub(a: Tensor, b: Tensor) -> Tensor:
    return a - b


def Mul(a: Tensor, b: Tensor) -> Tensor:
    return a * b


def Div(a: Tensor, b: Tensor) -> Tensor:
    # ONNX integer division truncates; torch's `/` would promote to float.
    return a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")


def Pow(a: Tensor, b: Tensor) -> Tensor:
    return torch.pow(a, b).to(a.dtype)


def Mod(a: Tensor, b: Tensor, fmod: int = 0) -> Tensor:
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


def Neg(x: Tensor) -> Tensor:
    return -x


def Abs(x: Tensor) -> Tensor:
    return x.abs()


def Sqrt(x: Tensor) -> Tensor:
    return x.sqrt()


def Exp(x: Tensor) -> Tensor:
    return x.exp()


def Log(x: Tensor) -> Tensor:
    return x.log()


def Reciprocal(x: Tensor) -> Tensor:
    return x.reciprocal()


def Erf(x: Tensor) -> Tensor:
    return torch.erf(x)


def Sin(x: Tensor) -> Tensor:
    return x.sin()


def Cos(x: Tensor) -> Tensor:
    return x.cos()


def Tan(x: Tensor) -> Tensor:
    return x.tan()


def Atan(x: Tensor) -> Tensor:
    return x.atan()


def Floor(x: Tensor) -> Tensor:
    return x.floor()


def Ceil(x: Tensor) -> Tensor:
    return x.ceil()


def Round(x: Tensor) -> Tensor:
    return x.round()  # half to even, as ONNX specifies


def Sign(x: Tensor) -> Tensor:
    return x.sign()


def Max(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.maximum, xs)


def Min(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.minimum, xs)


def Sum(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.add, xs)


def Mean(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.add, xs) / len(xs)


def Clip_6(x: Tensor, min: float = -math.inf, max: float = math.inf) -> Tensor:
    return torch.clamp(x, min, max)


def Clip_11(x: Tensor, min: Tensor | None = None, max: Tensor | None = None) -> Tensor:
    if min is None and max is None:
        return x
    return torch.clamp(x, min, max)


# --- activations --------------------------------------------------------------------------------


def Relu(x: Tensor) -> Tensor:
    return F.relu(x)


def Sigmoid(x: Tensor) -> Tensor:
    return torch.sigmoid(x)


def Tanh(x: Tensor) -> Tensor:
    return torch.tanh(x)


def LeakyRelu(x: Tensor, alpha: float = 0.01) -> Tensor:
    return F.leaky_relu(x, alpha)


def PRelu(x: Tensor, slope: Tensor) -> Tensor:
    return torch.where(x < 0, x * slope, x)


def Elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    return F.elu(x, alpha)


def Celu(x: Tensor, alpha: float = 1.0) -> Tensor:
    return F.celu(x, alpha)


def Selu(x: Tensor, alpha: float = 1.67326319217681884765625, gamma: float = 1.05070102214813232421875) -> Tensor:
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def HardSigmoid(x: Tensor, alpha: float = 0.2, beta: float = 0.5) -> Tensor:
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def HardSwish(x: Tensor) -> Tensor:
    return F.hardswish(x)


def Softplus(x: Tensor) -> Tensor:
    return F.softplus(x)


def Softsign(x: Tensor) -> Tensor:
    return F.softsign(x)


def Mish(x: Tensor) -> Tensor:
    return F.mish(x)


def Gelu(x: Tensor, approximate: str = "none") -> Tensor:
    return F.gelu(x, approximate=approximate)


def ThresholdedRelu(x: Tensor, alpha: float = 1.0) -> Tensor:
    return torch.where(x > alpha, x, torch.zeros_like(x))


def Softmax(x: Tensor, axis: int = 1) -> Tensor:
    # Before opset 13 Softmax flattened to 2-D at `axis` and normalised over the tail.
    shape = x.shape
    return F.softmax(x.flatten(axis if axis >= 0 else axis + x.ndim), dim=-1).reshape(shape)


def Softmax_13(x: Tensor, axis: int = -1) -> Tensor:
    return F.softmax(x, dim=axis)


def LogSoftmax(x: Tensor, axis: int = 1) -> Tensor:
    shape = x.shape
    return F.log_softmax(x.flatten(axis if axis >= 0 else axis + x.ndim), dim=-1).reshape(shape)


def LogSoftmax_13(x: Tensor, axis: int = -1) -> Tensor:
    return F.log_softmax(x, dim=axis)


# --- comparisons and logic ----------------------------------------------------------------------


def Equal(a: Tensor, b: Tensor) -> Tensor:
    return a == b


def Less(a: Tensor, b: Tensor) -> Tensor:
    return a < b


def LessOrEqual(a: Tensor, b: Tensor) -> Tensor:
    return a <= b


def Greater(a: Tensor, b: Tensor) -> Tensor:
    return a > b


def GreaterOrEqual(a: Tensor, b: Tensor) -> Tensor:
    return a >= b


def And(a: Tensor, b: Tensor) -> Tensor:
    return a & b


def Or(a: Tensor, b: Tensor) -> Tensor:
    return a | b


def Xor(a: Tensor, b: Tensor) -> Tensor:
    return a ^ b


def Not(x: Tensor) -> Tensor:
    return ~x


def IsNaN(x: Tensor) -> Tensor:
    return torch.isnan(x)


def IsInf(x: Tensor, detect_negative: int = 1, detect_positive: int = 1) -> Tensor:
    if detect_negative and detect_positive:
        return torch.isinf(x)
    return torch.isneginf(x) if detect_negative else torch.isposinf(x)


def Where(cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(cond, a, b)


# --- matrix products ----------------------------------------------------------------------------


def MatMul(a: Tensor, b: Tensor) -> Tensor:
    return torch.matmul(a, b)


def Gemm(
    a: Tensor,
    b: Tensor,
    c: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    transB: int = 0,
) -> Tensor:
    y = (a.t() if transA else a) @ (b.t() if transB else b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


def Einsum(*xs: Tensor, equation: str) -> Tensor:
    return torch.einsum(equation, *xs)
