"""HTTP connections with a deadline and a size limit for each request's headers.

uvicorn holds a connection for as long as its client likes until the request's headers are complete:
a connection that sends nothing, or its headers a byte at a time, is never closed, and enough of
them exhaust the process's file descriptors, after which nobody is answered. Here a connection
must complete each request's headers within ``request_timeout_s`` of opening, or of the previous
response; otherwise it is closed, with a bare 408 where a request was begun (the protocol, and so
the error's shape, is not known before the headers). Headers past ``MAX_HEADER_BYTES`` get a bare
431, and the connection closes: httptools bounds neither their count nor their length. Idle
keep-alive connections still close after uvicorn's 5 s. A client that stops reading its response is
dropped after the same timeout (a response's bytes stay in memory until read). The body's deadline is
``serve.middleware.Guard``'s. ``onnxkit serve`` also raises its open-files limit to the hard limit
(``raise_open_files_limit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from onnxkit.settings import MIN_TRANSFER_RATE

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
# A request line and headers longer than this are refused (nginx allows 32 KiB by default, h11 16 KiB).
# httptools has no limit of its own: uvicorn kept every header line, 500 MiB of them in 0.7 s.
MAX_HEADER_BYTES = 64 * 1024
# A response the client stops reading holds its bytes in the server until it does: a connection whose
# response waits on the client (asyncio paused its writes) must take it at MIN_TRANSFER_RATE, or is dropped.

if sys.platform == "linux":  # SIOCOUTQ: a socket's unsent and unacknowledged bytes
    import fcntl
    import termios

    OUTQ: int | None = termios.TIOCOUTQ
else:
    OUTQ = None


def timed_http(request_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, with a deadline for each request's headers.

    A timer per request would cost ~2 us on every one: instead each connection waiting for headers
    notes when they are due, and one sweep, rescheduled while any connection waits, closes the late.
    """
    every = min(1.0, request_timeout_s / 4)

    class TimedHttp(HttpToolsProtocol):
        waiting: ClassVar[dict[TimedHttp, float]] = {}  # connection -> when its headers are due (loop time)
        # connection -> [when it is given up, its unsent bytes at the last sweep (-1: not yet counted)]
        stalled: ClassVar[dict[TimedHttp, list[float]]] = {}
        sweep: ClassVar[asyncio.TimerHandle | None] = None

        header_bytes = 0  # received while this connection waits for a request's headers

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)  # the parser may complete the headers here
            if self in TimedHttp.waiting:  # not yet: everything since they were awaited is headers
                self.header_bytes += len(data)
                if self.header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                    TimedHttp.waiting.pop(self, None)
                    self.transport.write(TOO_LARGE)
                    self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            TimedHttp.waiting.pop(self, None)
            TimedHttp.stalled.pop(self, None)
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            TimedHttp.waiting.pop(self, None)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            next_has_headers = bool(self.pipeline)  # a pipelined request waiting already has them
            super().on_response_complete()
            if not next_has_headers and not self.transport.is_closing():
                self._await_headers()

        def pause_writing(self) -> None:
            super().pause_writing()  # the client reads slower than the response is written
            # counted by the sweep, not here: a large response to a fast client pauses on every write
            TimedHttp.stalled[self] = [self.loop.time() + request_timeout_s, -1]
            self._ensure_sweep()

        def resume_writing(self) -> None:
            TimedHttp.stalled.pop(self, None)
            super().resume_writing()

        def _unsent(self) -> int:
            """Response bytes the client has not taken: the transport's buffer, and on Linux the
            socket's send queue, which can hold megabytes and so hide a client that reads."""
            left = self.transport.get_write_buffer_size()
            sock = self.transport.get_extra_info("socket")
            if OUTQ is not None and sock is not None:
                with contextlib.suppress(OSError, ValueError):
                    left += int(struct.unpack("i", fcntl.ioctl(sock.fileno(), OUTQ, b"\0\0\0\0"))[0])
            return left

        def _await_headers(self) -> None:
            self.header_bytes = 0
            TimedHttp.waiting[self] = self.loop.time() + request_timeout_s
            self._ensure_sweep()

        def _ensure_sweep(self) -> None:
            if TimedHttp.sweep is None:
                TimedHttp.sweep = self.loop.call_later(every, TimedHttp._sweep, self.loop)

        @staticmethod
        def _sweep(loop: asyncio.AbstractEventLoop) -> None:
            TimedHttp.sweep = None
            now = loop.time()
            late = [conn for conn, due in TimedHttp.waiting.items() if due <= now]
            for conn in late:
                del TimedHttp.waiting[conn]
                conn._headers_late()
            for conn, state in list(TimedHttp.stalled.items()):
                left = conn._unsent()
                # what the client took since the last sweep earns time at MIN_TRANSFER_RATE, up to the timeout
                # (none at the first sweep after a pause, whose count is -1)
                state[0] = min(state[0] + max(state[1] - left, 0) / MIN_TRANSFER_RATE, now + request_timeout_s)
                state[1] = left
                if state[0] <= now:
                    del TimedHttp.stalled[conn]
                    conn.transport.abort()  # close() would wait for the buffer to drain, which it does not
            if TimedHttp.waiting or TimedHttp.stalled:
                TimedHttp.sweep = loop.call_later(every, TimedHttp._sweep, loop)

        def _headers_late(self) -> None:
            # Only a connection between requests waits for headers: on_headers_complete takes it off the
            # list, and on_response_complete puts it back only when no pipelined request has them.
            if self.transport.is_closing():
                return
            if self.header_bytes:  # a request was begun: say why it ends. An idle connection closes
                self.transport.write(TIMED_OUT)  # silently, as at keep-alive's end: a client about to
            self.transport.close()  # reuse it could take an unasked-for 408 for its next answer

    return TimedHttp


def raise_open_files_limit() -> tuple[int, int]:
    """The soft limit on open files up to the hard one, as servers do at start: every connection is a
    file descriptor, and a soft limit of 1024 (common) is used up by that many idle clients within the
    request timeout. Returns (soft, hard) as they are afterwards; unchanged where the system refuses."""
    try:
        import resource
    except ImportError:  # not on Windows
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS caps it below an infinite hard limit
            return (soft, hard)
    return resource.getrlimit(resource.RLIMIT_NOFILE)
