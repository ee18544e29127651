"""What the HTTP transports share: the app's state, JSON in and out."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from onnxkit.errors import InvalidRequest
from onnxkit.serve.state import AppState

# Bodies larger than this are parsed in a worker thread, so a large request never stalls the event loop.
PARSE_INLINE_BYTES = 64 * 1024


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.onnxkit
    return state


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


async def parse_json(raw: bytes) -> Any:
    """JSON from request bytes: a 400 naming the problem, parsed off the event loop when large."""
    try:
        if len(raw) > PARSE_INLINE_BYTES:
            return await asyncio.to_thread(orjson.loads, raw)
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc
