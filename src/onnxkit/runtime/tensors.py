"""KServe v2 datatypes ↔ numpy, and the wire codecs every tensor transport shares.

Decoding checks what the client claims (datatype, shape, element count) against
what it sent; checking it against the *model* is ``tasks.tensor``'s job.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from onnxkit.errors import InvalidRequest, PayloadTooLarge
from onnxkit.settings import Limits
from onnxkit.types import DATATYPES, Array

_NAMES: dict[np.dtype[Any], str] = {v: k for k, v in DATATYPES.items()}
# The wire's byte order for each datatype, made once (newbyteorder builds a dtype per call).
_LITTLE: dict[np.dtype[Any], np.dtype[Any]] = {v: v.newbyteorder("<") for v in DATATYPES.values()}


def datatype_of(dtype: np.dtype[Any]) -> str:
    name = _NAMES.get(np.dtype(dtype))
    if name is None:
        raise InvalidRequest(f"numpy dtype {dtype} has no KServe v2 datatype")
    return name


def numpy_dtype(datatype: Any, *, tensor: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        known = ", ".join(DATATYPES)
        raise InvalidRequest(f"input {tensor!r} has datatype {datatype!r}; expected one of {known}")
    return dtype


def check_shape(shape: Any, *, tensor: str, limits: Limits) -> tuple[int, ...]:
    """A claimed shape, checked before anything is allocated: integers, not too many, not too large."""
    if (
        not isinstance(shape, list | tuple)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidRequest(f"input {tensor!r} has shape {shape!r}; expected a list of non-negative integers")
    if len(shape) > limits.max_dims:
        raise InvalidRequest(
            f"input {tensor!r} has {len(shape)} dims; at most {limits.max_dims} (the server's --limit max_dims)"
        )
    # every dim alone, and their product, within the bound (a zero dim must not hide an absurd one)
    if any(d > limits.max_tensor_elements for d in shape) or _count(shape) > limits.max_tensor_elements:
        raise PayloadTooLarge(
            f"input {tensor!r} has shape {list(shape)}; a tensor may hold at most {limits.max_tensor_elements} "
            "elements (the server's --limit max_tensor_elements)"
        )
    return tuple(shape)


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _as_text(value: Any, tensor: str) -> str:
    # onnxruntime's STRING tensors take Python str; clients send str, bytes or {"b64": ...}.
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="surrogateescape")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return b64_text(value["b64"], tensor)
    raise InvalidRequest(
        f"input {tensor!r} is BYTES; an element is {type(value).__name__} {str(value)[:40]!r}. "
        'Send strings or {"b64": "..."}'
    )


def b64_text(data: str, tensor: str) -> str:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"input {tensor!r}: a b64 value is not base64 ({exc})") from exc
    return raw.decode("utf-8", errors="surrogateescape")


def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def from_json(name: str, datatype: Any, shape: Any, data: Any, limits: Limits) -> Array:
    """A tensor from JSON ``data`` (flat or nested, row-major)."""
    dims = check_shape(shape, tensor=name, limits=limits)
    dtype = numpy_dtype(datatype, tensor=name)
    if not isinstance(data, list):
        data = [data]
    expected = _count(dims)
    if dtype == np.object_:
        flat = [_as_text(v, name) for v in _flatten(data)]
        array: Array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            with np.errstate(over="raise", invalid="raise"):  # 1e39 is no FP32, 300 no INT8: a 400, not inf
                array = np.asarray(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
            raise InvalidRequest(f"input {name!r}: data does not convert to {datatype}: {exc}") from exc
    if array.size != expected:
        raise InvalidRequest(
            f"input {name!r} has shape {list(dims)} ({expected} elements) but its data holds {array.size}"
        )
    return array.reshape(dims)


def from_bytes(name: str, datatype: Any, shape: Any, raw: bytes | memoryview, limits: Limits) -> Array:
    """A tensor from raw little-endian bytes (binary extension, gRPC raw contents)."""
    dims = check_shape(shape, tensor=name, limits=limits)
    dtype = numpy_dtype(datatype, tensor=name)
    expected = _count(dims)
    if dtype == np.object_:
        items = split_bytes(raw, tensor=name, expected=expected)
        array: Array = np.empty(expected, dtype=object)
        array[:] = [_as_text(b, name) for b in items]
        return array.reshape(dims)
    if len(raw) != expected * dtype.itemsize:
        raise InvalidRequest(
            f"input {name!r} has shape {list(dims)} of {datatype}, which is "
            f"{expected * dtype.itemsize} bytes; {len(raw)} bytes arrived"
        )
    wire = _LITTLE.get(dtype) or dtype.newbyteorder("<")
    return np.frombuffer(raw, dtype=wire).astype(dtype, copy=False).reshape(dims)


def split_bytes(raw: bytes | memoryview, *, tensor: str, expected: int | None = None) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes.

    With ``expected``, the count is checked against the bytes before any element is copied: each
    element takes at least its 4-byte length.
    """
    view = memoryview(raw)
    if expected is not None and len(view) < 4 * expected:
        raise InvalidRequest(
            f"input {tensor!r} claims {expected} BYTES elements; {len(view)} bytes cannot hold them "
            "(each element has a 4-byte length)"
        )
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if expected is not None and len(items) == expected:
            raise InvalidRequest(f"input {tensor!r}: its bytes hold more than the {expected} elements its shape says")
        if offset + 4 > len(view):
            raise InvalidRequest(f"input {tensor!r}: BYTES data ends inside a 4-byte length prefix")
        (n,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + n > len(view):
            raise InvalidRequest(f"input {tensor!r}: a BYTES element claims {n} bytes; fewer remain")
        items.append(bytes(view[offset : offset + n]))
        offset += n
    if expected is not None and len(items) != expected:
        raise InvalidRequest(
            f"input {tensor!r} has {expected} elements by its shape but its bytes hold {len(items)}"
        )
    return items


def _element_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    return str(value).encode()


def join_bytes(values: Iterable[Any]) -> bytes:
    parts: list[bytes] = []
    for v in values:
        b = _element_bytes(v)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def to_bytes(array: Array) -> bytes:
    """Raw little-endian bytes of a tensor; BYTES as length-prefixed elements."""
    if array.dtype == np.object_:
        return join_bytes(array.ravel())
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_json_data(array: Array) -> Any:
    """Flat row-major data for a JSON body; orjson serialises 1-D numeric arrays natively."""
    if array.dtype == np.object_:
        return [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel()
        ]
    if array.dtype == np.float16:
        return array.astype(np.float32).ravel()
    return np.ascontiguousarray(array).ravel()
