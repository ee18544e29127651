"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs latency on every request)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from onnxkit.errors import OnnxkitError, PayloadTooLarge, Unauthorized
from onnxkit.serve.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/health", "/v2/health", "/metrics", "/docs", "/openapi.json", "/redoc")


async def send_error(scope: Scope, send: Send, exc: OnnxkitError) -> None:
    body = json.dumps(error_body(scope.get("path", ""), exc)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": int(exc.status),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """API key check and request body limit."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if self.api_key and not path.startswith(OPEN_PATHS):
            auth = headers.get(b"authorization", b"")
            token = auth[7:] if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(token, self.api_key):
                what = "missing" if not token else "wrong"
                await send_error(
                    scope,
                    send,
                    Unauthorized(
                        f"API key {what}: send it as 'Authorization: Bearer <key>'", code="invalid_api_key"
                    ),
                )
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await send_error(scope, send, _too_large(int(length), self.max_body))
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # Chunked body: count as it arrives.
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _too_large(seen, self.max_body)
            return message

        await self.app(scope, limited, send)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is {size} bytes; the limit is {limit} bytes (--max-body-bytes)", code="payload_too_large"
    )
