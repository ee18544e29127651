"""In Ray Serve's HTTP proxy: errors the proxy makes itself leave in the protocol's own shape.

The replicas answer every error as the protocol expects (OpenAI ``{"error": {...}}``, KServe and
TF-Serving ``{"error": "..."}``). The proxy in front of them has its own: a replica that dies with a
request on it gives the client a bare ``500 Internal Server Error``, and a full queue a plain-text
429. Ray Serve's proxies import ``middlewares`` at start-up when
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=onnxkit.serve.ray_proxy.middlewares`` is in their
environment: ``ray_driver`` gives it to the Serve controller it starts, which passes it on to the
proxies (docs/scale-out.md says what to do when Serve already runs). Kept light: it runs in every
proxy, which never loads a model.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from onnxkit.errors import InternalError, ModelUnavailable, OnnxkitError, Overloaded
from onnxkit.serve.middleware import ASGIApp, Message, Receive, Scope, Send, send_error
from onnxkit.serve.ray_front import LOST, Front


def middlewares() -> list[Any]:
    from starlette.middleware import Middleware

    # ProxyErrors outermost: the requests Front leaves to Ray's own path get its shapes too.
    return [Middleware(ProxyErrors), Middleware(Front)]


def _error(status: int, message: str) -> OnnxkitError:
    kind = {429: Overloaded, 503: ModelUnavailable}.get(status, InternalError)
    err = kind(message)
    err.status = HTTPStatus(status)  # type: ignore[misc]
    return err


def _is_json(message: Message) -> bool:
    for key, value in message.get("headers") or []:
        if key.lower() == b"content-type":
            return bool(value.startswith(b"application/json"))
    return False


class ProxyErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        held: Message | None = None  # the start of an error the proxy made itself, reshaped below
        text = b""

        async def reshape(message: Message) -> None:
            nonlocal started, held, text
            if message["type"] == "http.response.start":
                started = True
                if int(message["status"]) >= 400 and not _is_json(message):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                text += message.get("body", b"")
                if not message.get("more_body"):
                    status = int(held["status"])
                    reason = text.decode(errors="replace").strip() or HTTPStatus(status).phrase
                    await send_error(scope, send, _error(status, reason))
                    held = None  # answered
                return
            await send(message)

        try:
            await self.app(scope, receive, reshape)
        except Exception:
            if started and held is None:
                raise  # the replica's own answer had begun: nothing here can mend it
            started = False  # the proxy's own error, held back, never finished: answered below
        if not started:
            # The proxy gave up on the request without a response of the replica's: the replica died under it.
            await send_error(scope, send, ModelUnavailable(LOST))
