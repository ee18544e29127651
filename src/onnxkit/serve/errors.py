"""Error translation: each transport names the paths it owns and its error shape.

One handler per app; the transport whose prefix matches the request path shapes
the body. OpenAI's shape is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


FORMATS: list[ErrorFormat] = [
    ErrorFormat(lambda p: p.startswith("/v2"), plain_body),
    ErrorFormat(lambda p: p.startswith("/v1/models/") and (":" in p or p.endswith("/metadata")), plain_body),
]


def error_body(path: str, exc: OnnxkitError) -> JSON:
    for fmt in FORMATS:
        if fmt.owns(path):
            return fmt.body(exc)
    return openai_body(exc)


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """pydantic's error list → one readable sentence and the offending field."""
    parts = []
    param = None
    for err in errors[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts), param
