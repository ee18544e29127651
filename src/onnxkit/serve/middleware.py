"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs latency on every request).

- ``Guard``: the API key, and the request body's size and time limits (chunked bodies included).
- ``Shield``: an exception that escapes a route never reaches the server: it is answered as a 500 in the
  protocol's shape (or, when the answer was already sent, only logged), so the connection stays open for
  the client's next request.
- ``CancelOnDisconnect``: the one disconnect rule for every route. Once a request's body is read,
  a client that goes away cancels the request's task wherever it waits (a batch queue, an engine
  stream, a worker), so no work runs for nobody.
- ``AfterStartup``: what runs once the lifespan's start-up, which loads the models, completes: in a
  process that is the server's own (``onnxkit serve``, a Ray replica), settling the heap.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sized
from typing import Any

from onnxkit.errors import InternalError, OnnxkitError, PayloadTooLarge, RequestTimeout, Unauthorized
from onnxkit.serve.errors import error_bytes
from onnxkit.settings import MIN_TRANSFER_RATE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("onnxkit.server")
# nginx's "client closed request": what the access log records for a request whose client left unanswered
CLIENT_LEFT = 499
OPEN_PATHS = ("/health", "/v2/health", "/metrics", "/docs", "/openapi.json", "/redoc", "/ui/")
# The page's files and the pointer to it; the API calls the page makes carry the user's key.
OPEN_EXACT = ("/", "/ui")


async def send_error(scope: Scope, send: Send, exc: OnnxkitError, *, close: bool = False) -> None:
    """``exc`` in the protocol's shape; ``close``: the connection closes after it (unread body bytes
    would otherwise be taken for the next request)."""
    body = error_bytes(scope.get("path", ""), exc)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": int(exc.status), "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """API key check, request body limit, and the body's deadline.

    The body is read here, whole, before any route sees it: its size is bounded (chunked bodies
    too: a 413 before any route runs), and so is its time. It must be complete within
    ``request_timeout_s`` plus one second per ``MIN_TRANSFER_RATE`` bytes received, or the request is a
    408 and its connection closes; a client trickling bytes cannot hold a connection indefinitely.
    (A request's headers are held to ``request_timeout_s`` by ``serve.connections``.) A timer per
    request would cost ~3 us on every one; instead requests reading a body are registered, and one
    sweeper per app cancels the read of any past its deadline.
    """

    def __init__(
        self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int, request_timeout_s: float
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes
        self.timeout = request_timeout_s
        self._reading: dict[asyncio.Task[Any], _Reading] = {}
        self._sweeper = Sweeper("onnxkit:body-deadlines", min(1.0, self.timeout / 4), self._reading, self._sweep)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if self.api_key and not (path in OPEN_EXACT or path.startswith(OPEN_PATHS)):
            auth = headers.get(b"authorization", b"")
            token = auth[7:] if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(token, self.api_key):
                what = "missing" if not token else "wrong"
                err = Unauthorized(f"API key {what}: send it as 'Authorization: Bearer <key>'", code="invalid_api_key")
                await send_error(scope, send, err)
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await send_error(scope, send, _too_large(int(length), self.max_body))
            return
        if (length is None or length == b"0") and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        task = asyncio.current_task()
        assert task is not None
        reading = _Reading(time.monotonic())
        self._reading[task] = reading
        self._sweeper.wake()
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not reading.expired:
                        raise
                    _handled(task)
                    await send_error(scope, send, _too_slow(reading.seen, self.timeout), close=True)
                    return
                if message["type"] != "http.request":
                    return  # the client left while sending
                chunk = message.get("body", b"")
                reading.seen += len(chunk)
                if reading.seen > self.max_body:
                    await send_error(scope, send, _too_large(reading.seen, self.max_body, chunked=True), close=True)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        finally:
            self._reading.pop(task, None)
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    def _sweep(self) -> None:
        now = time.monotonic()
        for task, reading in list(self._reading.items()):
            if not reading.expired and now > reading.started + self.timeout + reading.seen / MIN_TRANSFER_RATE:
                reading.expired = True
                task.cancel()  # it waits in receive(): the only await while registered


class Sweeper:
    """One task per app that calls ``sweep`` every ``every`` seconds while ``pending`` holds anything,
    and sleeps otherwise; ``wake`` after adding to it. A timer or watcher task per request would cost
    every request microseconds (a task each cost KServe ~10% of its small-request throughput)."""

    def __init__(self, name: str, every: float, pending: Sized, sweep: Callable[[], None]) -> None:
        self.name = name
        self.every = every
        self.pending = pending
        self.sweep = sweep
        self._task: asyncio.Task[None] | None = None
        self._work = asyncio.Event()

    def wake(self) -> None:
        task = self._task
        if task is None or task.done():
            self._work = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
        elif not self._work.is_set():
            self._work.set()

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._work.clear()
                await self._work.wait()
            await asyncio.sleep(self.every)
            self.sweep()


def _handled(task: asyncio.Task[Any]) -> None:
    """The task's cancellation was this module's own and is dealt with: Python 3.11+ counts
    cancellations (``Task.uncancel``), and one left counted would confuse ``asyncio.timeout``."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


class _Reading:
    """A request whose body is being read: since when, how much came, and whether its time is up."""

    __slots__ = ("expired", "seen", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.seen = 0
        self.expired = False


def _too_slow(received: int, timeout: float) -> RequestTimeout:
    return RequestTimeout(
        f"the request body did not arrive in time ({received} bytes received): a body must be complete within "
        f"{timeout:g} s plus 1 s per {MIN_TRANSFER_RATE} bytes (--request-timeout)", code="request_timeout"
    )


def _too_large(size: int, limit: int, chunked: bool = False) -> PayloadTooLarge:
    what = f"more than {limit} bytes so far" if chunked else f"{size} bytes"
    return PayloadTooLarge(
        f"request body is {what}; the limit is {limit} bytes (--max-body-bytes)", code="payload_too_large"
    )


class _InFlight:
    """One request past its body: whether it was answered, and its watch once one is started."""

    __slots__ = ("answered", "gone", "receive", "since", "task", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self.task = task
        self.receive = receive
        self.since = 0.0
        self.answered = False
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None

    async def watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if not self.answered:  # a server also says "disconnect" once the response is complete
            self.gone = True
            self.task.cancel()


class CancelOnDisconnect:
    """A request whose client goes away after sending its body is cancelled.

    Most requests are answered within milliseconds, and a watcher task per request (created,
    stepped, cancelled) cost ~10% of KServe's small-request throughput. So requests past their body
    are only registered; one sweeper per app starts a watch for each request still running
    ``WATCH_AFTER_S`` later. Work for a client that leaves runs at most about twice that long.
    """

    WATCH_AFTER_S = 0.02

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._in_flight: dict[asyncio.Task[Any], _InFlight] = {}
        self._sweeper = Sweeper("onnxkit:disconnect-watch", self.WATCH_AFTER_S, self._in_flight, self._watch_late)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        entry = _InFlight(task, receive)
        in_flight = self._in_flight

        async def body() -> Message:
            message = await receive()
            if not entry.since and message["type"] == "http.request" and not message.get("more_body", False):
                entry.since = time.monotonic()
                in_flight[task] = entry
                self._sweeper.wake()
            return message

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                entry.answered = True
            await send(message)

        try:
            await self.app(scope, body, tracked)
        except asyncio.CancelledError:
            if not entry.gone:
                raise
            _handled(task)
        finally:
            entry.answered = True
            in_flight.pop(task, None)
            if entry.watcher is not None:
                entry.watcher.cancel()

    def _watch_late(self) -> None:
        loop = asyncio.get_running_loop()
        due = time.monotonic() - self.WATCH_AFTER_S
        for entry in list(self._in_flight.values()):
            if entry.watcher is None and not entry.answered and entry.since <= due:
                entry.watcher = loop.create_task(entry.watch())


class Shield:
    """Nothing a route raises reaches the server (which would close the connection)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if started:  # answered already (FastAPI's last-resort handler re-raises after its 500)
                return
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await send_error(scope, send, InternalError("internal error; see the server log"))


class AfterStartup:
    """Runs ``hooks``, in order, once the lifespan's start-up completes (the models are loaded, the
    services listen), before the server is told so. ``onnxkit serve`` settles its heap here
    (``runtime.memory.settle_heap``: what start-up made lives as long as the process, so only in a
    process that is the server's own, as a Ray replica's) and names where it listens."""

    def __init__(self, app: ASGIApp, *hooks: Callable[[], object]) -> None:
        self.app = app
        self.hooks = hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def then(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                for hook in self.hooks:
                    hook()
            await send(message)

        await self.app(scope, receive, then)
