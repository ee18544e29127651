"""``ray_proxy.ProxyErrors``: what Ray Serve's proxy says itself reaches the client in the protocol's shape.

Here the middleware wraps small ASGI apps that behave as Ray's proxy does when a replica is lost
(returns, or raises, without a response) or its queue is full (a plain-text 429); the cluster test
(test_ray_serve.py) kills a real replica.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from onnxkit.serve.middleware import Message, Receive, Scope, Send
from onnxkit.serve.ray_proxy import ProxyErrors

PATHS = {
    "/v1/embeddings": "openai",
    "/v1/chat/completions": "openai",
    "/v2/models/mlp/infer": "plain",
    "/v1/models/mlp:predict": "plain",
}


async def gives_up(scope: Scope, receive: Receive, send: Send) -> None:
    return None  # as Ray's proxy does when the replica died under the request: no response at all


async def raises(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("the replica's actor died")


async def starts_then_raises(scope: Scope, receive: Receive, send: Send) -> None:
    # seen on the cluster: the proxy began its own plain 500 for a killed replica, then raised
    await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
    raise RuntimeError("the replica's actor died")


async def full_queue(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 429, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Request dropped due to backpressure"})


async def replica_error(scope: Scope, receive: Receive, send: Send) -> None:
    body = b'{"error": "the replica\'s own error"}'
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def call(app: Any, path: str) -> tuple[int, dict[str, Any]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(ProxyErrors(app)(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(starts[0]["status"]), json.loads(body)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("app", [gives_up, raises, starts_then_raises])
def test_a_lost_replica_is_a_503_in_the_protocols_shape(app: Any, path: str) -> None:
    status, body = call(app, path)
    assert status == 503
    if PATHS[path] == "openai":
        assert body["error"]["type"] == "server_error" and "replica" in body["error"]["message"]
    else:
        assert isinstance(body["error"], str) and "replica" in body["error"]


@pytest.mark.parametrize("path", PATHS)
def test_a_full_queue_is_a_429_in_the_protocols_shape(path: str) -> None:
    status, body = call(full_queue, path)
    assert status == 429
    message = body["error"]["message"] if PATHS[path] == "openai" else body["error"]
    assert message == "Request dropped due to backpressure"


def test_the_replicas_own_answers_pass_untouched() -> None:
    assert call(replica_error, "/v2/models/mlp/infer") == (400, {"error": "the replica's own error"})
