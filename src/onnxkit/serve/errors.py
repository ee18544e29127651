"""HTTP error shapes: each protocol owns some paths, and its errors are answered in its own shape.

KServe v2 and TF-Serving answer ``{"error": "..."}``; everything else is OpenAI's
``{"error": {"message", "type", "param", "code"}}``. ``error_response`` is the one place an
``OnnxkitError`` becomes an HTTP answer: the app's exception handlers, the middleware and the
KServe fast path all call it. gRPC maps the same errors to its status codes in ``kserve_grpc``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from onnxkit.errors import OnnxkitError
from onnxkit.types import JSON


@dataclass(frozen=True)
class ErrorFormat:
    owns: Callable[[str], bool]
    body: Callable[[OnnxkitError], JSON]


def openai_body(exc: OnnxkitError) -> JSON:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


def plain_body(exc: OnnxkitError) -> JSON:
    # KServe v2 and TF-Serving both answer {"error": "..."}
    return {"error": exc.message}


def _tfserving(path: str) -> bool:
    if not path.startswith("/v1/models/"):
        return False
    rest = path.removeprefix("/v1/models/")
    return ":" in rest or rest.endswith("/metadata") or "/versions/" in rest


FORMATS: list[ErrorFormat] = [
    ErrorFormat(lambda p: p.startswith("/v2"), plain_body),
    ErrorFormat(_tfserving, plain_body),
]


def error_body(path: str, exc: OnnxkitError) -> JSON:
    for fmt in FORMATS:
        if fmt.owns(path):
            return fmt.body(exc)
    return openai_body(exc)


def error_bytes(path: str, exc: OnnxkitError) -> bytes:
    return orjson.dumps(error_body(path, exc))


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """pydantic's error list → one readable sentence and the offending field."""
    parts = []
    param = None
    # A wrong value first, then fields that are not honoured: both are named, the value is the param.
    errors = sorted(errors, key=lambda e: e.get("type") == "extra_forbidden")
    for err in errors[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        if err.get("type") == "extra_forbidden":  # never ignored silently: the field is named, and why
            parts.append(f"{where} is not a field onnxkit honours here; leave it out")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts), param
