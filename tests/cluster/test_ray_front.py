"""``ray_front.answer``: the replica's side of the short path, on small ASGI apps (test_ray_serve.py runs
the whole path through a real cluster's proxy)."""

from __future__ import annotations

import asyncio

from onnxkit.serve.middleware import ASGIApp, Message, Receive, Scope, Send
from onnxkit.serve.ray_front import PIECE, answer

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/echo", "headers": []}


async def echo_large(scope: Scope, receive: Receive, send: Send) -> None:
    body = (await receive())["body"] * (3 * PIECE // 4)  # 3 pieces from a 4-byte request
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def collect(app: ASGIApp, body: bytes) -> list[list[Message]]:
    return [batch async for batch in answer(app, SCOPE, body)]


def test_the_replica_acknowledges_at_once_and_sends_a_large_answer_in_pieces() -> None:
    batches = asyncio.run(collect(echo_large, b"abcd"))
    assert batches[0] == []  # at once: the router learns the replica took the request
    messages = [m for batch in batches for m in batch]
    assert messages[0]["type"] == "http.response.start"
    pieces = [m for m in messages if m["type"] == "http.response.body"]
    assert len(pieces) == 3 and all(len(p["body"]) <= PIECE for p in pieces)
    assert [p["more_body"] for p in pieces] == [True, True, False]
    assert b"".join(p["body"] for p in pieces) == b"abcd" * (3 * PIECE // 4)


def test_a_call_closed_early_cancels_the_apps_work() -> None:
    cancelled = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def leave_early() -> None:
        calls = answer(slow, SCOPE, b"")
        assert await calls.__anext__() == []
        waiting = asyncio.ensure_future(calls.__anext__())
        await asyncio.sleep(0.05)
        waiting.cancel()  # as Ray cancels the replica's call when the client leaves
        await asyncio.gather(waiting, return_exceptions=True)
        await calls.aclose()
        await asyncio.wait_for(cancelled.wait(), 5)

    asyncio.run(leave_early())
