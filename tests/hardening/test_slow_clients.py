"""Slow and idle clients cannot hold the server's connections: headers and bodies have deadlines.

The server is the real ``onnxkit serve`` with ``--request-timeout 1``: a request's headers within
1 s, its body within 1 s plus 1 s per 500 bytes. It starts with a soft limit of 256 open files, as a
shell with a low ``ulimit -n`` would give it, and raises it to the hard limit.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from onnxkit.settings import ServerSettings

from .conftest import Served, free_port, serve_process, write_repository

TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def strict_server(tiny_embed_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("slow")
    repo = write_repository(root / "repo")
    port = free_port()
    cmd = [sys.executable, "-m", "onnxkit", "serve", str(tiny_embed_model), "--repository", str(repo),
           "--port", str(port), "--grpc-port", "-1", "--request-timeout", str(TIMEOUT_S),
           "--no-access-log"]  # fmt: skip
    with serve_process(cmd, root, port, preexec_fn=low_ulimit) as served:
        yield served


LOW_SOFT_LIMIT = 256


def low_ulimit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def connect(served: Served) -> socket.socket:
    return socket.create_connection(served.address, timeout=10)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:  # socket.timeout, on 3.10 too
        pytest.fail(f"the server kept the connection open past {within} s; it sent {got[:200]!r}")
    except ConnectionResetError:
        pass
    return got, time.monotonic() - started


def head(name: str, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: {name}\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n").encode()  # fmt: skip


def test_a_connection_that_sends_nothing_is_closed(strict_server: Served) -> None:
    with connect(strict_server) as s:
        got, took = read_until_closed(s, within=TIMEOUT_S + 5)
    assert got == b"", got  # silently: no request was begun, so no answer a client could misread
    assert took >= TIMEOUT_S * 0.9, took


def test_headers_sent_a_byte_at_a_time_are_cut_off(strict_server: Served) -> None:
    request = head("x", "/v1/embeddings", 10)
    with connect(strict_server) as s:
        started = time.monotonic()
        try:
            for byte in request:  # 4 bytes a second: the headers alone would take ~20 s
                s.sendall(bytes([byte]))
                time.sleep(0.25)
                if time.monotonic() - started > TIMEOUT_S + 5:
                    pytest.fail("the server still reads headers past the deadline")
        except (BrokenPipeError, ConnectionResetError):
            pass
        got, _ = read_until_closed(s, within=5)
    assert got.startswith(b"HTTP/1.1 408 ") or got == b"", got  # a reset may overtake the 408
    assert time.monotonic() - started < TIMEOUT_S + 5


def test_slow_headers_after_a_response_on_a_kept_alive_connection_are_cut_off(strict_server: Served) -> None:
    with connect(strict_server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        first = s.recv(65536)
        while not first.endswith(b"}"):  # the whole response (its JSON body), before the next request
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        s.sendall(b"GET /hea")  # the next request starts, and stalls (uvicorn's keep-alive timer is off now)
        got, _ = read_until_closed(s, within=TIMEOUT_S + 5)
    assert got.startswith(b"HTTP/1.1 408 "), got


def test_an_idle_kept_alive_connection_closes_without_an_unasked_for_answer(strict_server: Served) -> None:
    # The timeout (1 s here) is below uvicorn's keep-alive (5 s): the header deadline closes the idle
    # connection, and must not write a 408 that a client reusing it would read as its next answer.
    with connect(strict_server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        first = s.recv(65536)
        while not first.endswith(b"}"):
            first += s.recv(65536)
        got, took = read_until_closed(s, within=TIMEOUT_S + 5)
    assert got == b"", got
    assert took < 4.0, took  # the header deadline's doing, not keep-alive's 5 s


@pytest.mark.parametrize(("path", "shape"), [
    ("/v1/embeddings", "openai"),
    ("/v2/models/mlp/infer", "kserve"),  # KServe's own ASGI path
    ("/v1/models/mlp:predict", "kserve"),  # TF-Serving: {"error": "..."} too
])  # fmt: skip
def test_a_body_that_stalls_is_a_408_in_the_protocols_shape(strict_server: Served, path: str, shape: str) -> None:
    with connect(strict_server) as s:
        s.sendall(head("x", path, 100_000) + b'{"input": ')  # then nothing more
        got, took = read_until_closed(s, within=TIMEOUT_S + 5)
    status, _, body = got.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 "), got
    assert b"connection: close" in status.lower(), status
    error = orjson.loads(body)["error"]
    message = error["message"] if shape == "openai" else error
    assert "did not arrive in time" in message and "--request-timeout" in message, message
    assert took < TIMEOUT_S + 3, took


def test_a_body_that_trickles_below_the_minimum_rate_is_cut_off(strict_server: Served) -> None:
    with connect(strict_server) as s:
        s.sendall(head("x", "/v1/embeddings", 100_000))
        started = time.monotonic()
        try:
            while time.monotonic() - started < TIMEOUT_S + 10:  # 100 bytes a second: below 500
                s.sendall(b" " * 10)
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got, _ = read_until_closed(s, within=5)
    # A 408, or a reset that overtook it (the client was still sending when the server closed): either
    # way the connection ended long before the 100 kB body could (~1000 s at this rate).
    assert got.startswith(b"HTTP/1.1 408 ") or got == b"", got
    assert time.monotonic() - started < TIMEOUT_S + 8


def test_a_body_that_keeps_coming_at_a_fair_rate_is_answered(strict_server: Served, tiny_embed_model: Path) -> None:
    # 4.5 kB over ~3 s (1.5 kB/s, above 500 B/s): longer than the 1 s timeout, and still on time.
    body = orjson.dumps({"model": tiny_embed_model.name, "input": ["word " * 60] * 15})
    with connect(strict_server) as s:
        s.sendall(head("x", "/v1/embeddings", len(body)))
        for i in range(0, len(body), 150):
            s.sendall(body[i : i + 150])
            time.sleep(0.1)
        s.settimeout(30)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 "), got[:300]


def test_the_open_files_limit_is_raised_to_the_hard_limit(strict_server: Served) -> None:
    soft, hard = psutil.Process(strict_server.pid).rlimit(psutil.RLIMIT_NOFILE)
    assert soft == hard or soft > LOW_SOFT_LIMIT, (soft, hard)


def test_idle_connections_are_closed_and_nobody_else_waits(strict_server: Served) -> None:
    # More idle connections than the soft limit the server started with: with that limit kept,
    # they would take every file descriptor and /health could not be accepted.
    server = psutil.Process(strict_server.pid)
    before = server.num_fds()
    idle = [connect(strict_server) for _ in range(LOW_SOFT_LIMIT + 50)]
    try:
        started = time.monotonic()
        assert httpx.get(strict_server.url + "/health", timeout=10).status_code == 200
        assert time.monotonic() - started < 2.0
        deadline = time.monotonic() + TIMEOUT_S + 10
        while server.num_fds() > before + 10:  # the 300 are closed on the server's side
            assert time.monotonic() < deadline, f"{server.num_fds() - before} connections still open"
            time.sleep(0.2)
    finally:
        for s in idle:
            s.close()


def test_headers_that_never_end_are_refused_before_they_fill_memory(strict_server: Served) -> None:
    # httptools keeps every header line and bounds neither their number nor their length: 500 MiB of
    # them, sent in 0.7 s, grew the server by as much. Now past 64 KiB the answer is 431, and the
    # connection closes.
    server = psutil.Process(strict_server.pid)
    before = server.memory_info().rss
    line = b"x-filler: " + b"a" * 1000 + b"\r\n"
    sent = 0
    with connect(strict_server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        try:
            while sent < 200 << 20:
                s.sendall(line * 64)
                sent += len(line) * 64
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            pytest.fail("the server read 200 MiB of headers")
        try:
            got, _ = read_until_closed(s, within=5)
        except ConnectionResetError:
            got = b""
    assert got.startswith(b"HTTP/1.1 431 ") or got == b"", got  # a reset (unread bytes) may overtake the 431
    assert sent < 16 << 20, f"{sent >> 20} MiB were taken before the refusal"
    assert server.memory_info().rss - before < 64 << 20
    assert httpx.get(strict_server.url + "/health", timeout=10).status_code == 200


def large_response(served: Served, pause_s: float, chunk_pause_s: float) -> bytes:
    """~6 MB of JSON from the repository's "pad" model (y = 2x), more than the sockets' buffers hold,
    read after ``pause_s`` in 64 KiB pieces ``chunk_pause_s`` apart: what came before the server closed."""
    n = 1_500_000
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, %d], "data": [' % n + b",".join(
        [b"1"] * n) + b"]}]}"
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(served.address)
    with s:
        s.sendall(head("x", "/v2/models/pad/infer", len(body)) + body)
        time.sleep(pause_s)
        got = b""
        s.settimeout(10)
        try:
            while chunk := s.recv(1 << 16):
                got += chunk
                time.sleep(chunk_pause_s)
                if got.endswith(b"]}]}"):
                    break
        except ConnectionResetError:
            pass
    return got


def split_response(got: bytes) -> tuple[bytes, int, bytes]:
    """The status line and headers, the content length they give, and what came after them."""
    status, _, rest = got.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in status.split(b"\r\n") if line.lower().startswith(b"content-length")]
    return status, int(lengths[0]) if lengths else -1, rest


def test_a_client_that_reads_its_response_at_a_fair_rate_gets_all_of_it(strict_server: Served) -> None:
    # ~500 kB/s, ~12 s: progress the socket's send queue hides for longer than the timeout
    got = large_response(strict_server, pause_s=0, chunk_pause_s=0.008)
    status, length, rest = split_response(got)
    assert status.startswith(b"HTTP/1.1 200 ") and len(rest) >= length, (got[:200], got[-200:])


def test_a_client_that_stops_reading_its_response_is_dropped(strict_server: Served) -> None:
    # A response waits in the server's memory until its client reads it. This client reads none of
    # it for a while: the server drops the connection instead of keeping it.
    got = large_response(strict_server, pause_s=TIMEOUT_S + 4, chunk_pause_s=0)
    status, length, rest = split_response(got)
    assert status.startswith(b"HTTP/1.1 200 "), got[:300]
    assert len(rest) < length, "the whole response was kept for a client that did not read it"
    assert httpx.get(strict_server.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_request_timeout_that_would_never_fire_or_always_fire_is_refused(bad: float, tmp_path: Path) -> None:
    # onnxkit.Server and the CLI alike: 0 would make every deadline sweep spin.
    with pytest.raises(ValueError, match="request_timeout_s"):
        ServerSettings(request_timeout_s=bad)
    done = subprocess.run([sys.executable, "-m", "onnxkit", "serve", "--request-timeout", str(bad)],
                          env={**os.environ, "ONNXKIT_HOME": str(tmp_path)}, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 1 and "--request-timeout" in done.stderr, done.stderr
