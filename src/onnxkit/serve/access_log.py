"""One line per HTTP request, plain or JSON (pure ASGI: no BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable

from onnxkit.serve.middleware import CLIENT_LEFT, ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("onnxkit.access")


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler onnxkit adds when nobody configured the access logger."""


def _default_sink() -> Callable[[str], None]:
    # The CLI configures no logging; make sure the lines reach stderr anyway.
    if not log.handlers:
        handler = _OwnHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return _Lines()


class _Lines:
    """One server's access lines (one per event loop: servers in threads of one process each have theirs).

    While onnxkit's own stderr handler is the logger's only consumer, lines are written straight to
    its stream, once per event-loop turn: a log record per request cost ~18 us, a quarter of the
    server's own work on a small KServe request. With any other handler, a filter, or propagation
    to a configured root logger, each line is a log record as usual.
    """

    def __init__(self) -> None:
        self.pending: list[str] = []

    def __call__(self, line: str) -> None:
        handlers = log.handlers
        if (len(handlers) == 1 and isinstance(handlers[0], _OwnHandler) and not handlers[0].filters
                and not log.filters and not (log.propagate and logging.root.handlers)):  # fmt: skip
            if not log.isEnabledFor(logging.INFO):
                return
            if not self.pending:
                asyncio.get_running_loop().call_soon(self.flush, handlers[0])
            self.pending.append(line)
            return
        _emit(line)

    def flush(self, handler: _OwnHandler) -> None:
        lines, self.pending = self.pending, []
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: an access line is not worth a failure
            pass


def _emit(line: str) -> None:
    """``log.info(line)`` without ``Logger.findCaller``'s stack walk: the caller of an access line is
    always this module. Handlers, filters and levels apply as usual."""
    if log.isEnabledFor(logging.INFO):
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None, "AccessLog"))


class AccessLog:
    def __init__(
        self, app: ASGIApp, *, json_lines: bool = False, sink: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.json_lines = json_lines
        self.sink = sink or _default_sink()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        size = 0

        async def recording(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording)
            status = status or CLIENT_LEFT  # returned unanswered: only when the client left (the guard, KServe infer)
        except BaseException:
            status = status or 500
            raise
        finally:
            self.sink(self._line(scope, status, size, time.perf_counter() - started))

    def _line(self, scope: Scope, status: int, size: int, seconds: float) -> str:
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        method = scope.get("method", "-")
        path = scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        ms = round(seconds * 1000, 3)
        if self.json_lines:
            record = {
                "ts": round(time.time(), 3),
                "client": peer,
                "method": method,
                "path": target,
                "http_version": scope.get("http_version", "1.1"),
                "status": status,
                "bytes": size,
                "duration_ms": ms,
            }
            return json.dumps(record, separators=(",", ":"))
        return f'{peer} "{method} {target} HTTP/{scope.get("http_version", "1.1")}" {status} {size} {ms}ms'
