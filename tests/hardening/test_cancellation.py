"""Class 3: work nobody waits for stops (a 429 leaves nothing running; a client that leaves cancels all)."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

from .conftest import Served


def generated(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(r'onnxkit_generated_tokens_total\{model="chat",version="1"\} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def settled(url: str, quiet: float = 1.0, timeout: float = 60.0) -> float:
    """The generated-token counter once it has stopped moving for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = generated(url), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = generated(url)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError("generation never stopped")


@pytest.fixture(scope="module")
def chat_server(tiny_chat_model: Path) -> Iterator[Server]:
    # room for 6 queued generations; requests may ask for up to 64
    with Server([ModelSpec("chat", tiny_chat_model)], port=0, max_queued_generations=6, access_log=False) as s:
        yield s


def test_a_429_leaves_nothing_running(chat_server: Server) -> None:
    url = chat_server.url
    before = settled(url)
    body = {"model": "chat", "prompt": ["one", "two", "three", "four"], "n": 4, "max_tokens": 4000, "temperature": 0}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 429 and "the limit is 6" in r.json()["error"]["message"]
    assert settled(url) == before  # not one of the 16 generations ran


def _leave_after(url: str, path: str, body: dict[str, object], seconds: float) -> None:
    """Send a request over a raw socket and close the connection after ``seconds``."""
    payload = orjson.dumps(body)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        time.sleep(seconds)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_leaving_cancels_every_generation(chat_server: Server, path: str, stream: bool) -> None:
    """Four generations (2 prompts x n 2, or n 4) of up to 15000 tokens each: a client leaving after 0.5 s
    stops them all; without cancellation they would add 60000 tokens."""
    url = chat_server.url
    before = settled(url)
    if path == "/v1/completions":
        body: dict[str, object] = {"model": "chat", "prompt": ["once upon", "a time"], "n": 2}
    else:
        body = {"model": "chat", "messages": [{"role": "user", "content": "tell a story"}], "n": 4}
    body |= {"max_tokens": 15000, "temperature": 0, "stream": stream}
    _leave_after(url, path, body, 0.5)
    ran = settled(url) - before
    assert 0 < ran < 4 * 15000 / 4, ran  # far less than a quarter of what they would have generated


def test_a_queued_embeddings_request_whose_client_left_never_runs(tiny_embed_model: Path) -> None:
    """With a long batching window, a request whose client left while it waited is skipped."""
    with Server([ModelSpec("e", tiny_embed_model)], port=0, max_batch_delay_ms=400, access_log=False) as s:
        leaver = threading.Thread(target=_leave_after, args=(s.url, "/v1/embeddings",
                                                            {"model": "e", "input": ["left"] * 5}, 0.1))  # fmt: skip
        leaver.start()
        leaver.join()
        stayed = httpx.post(s.url + "/v1/embeddings", json={"model": "e", "input": ["stayed"]}, timeout=30)
        assert stayed.status_code == 200
        (stats,) = httpx.get(s.url + "/v2/models/e/stats").json()["model_stats"]
    assert stats["inference_count"] == 1  # the five texts of the request that left were never embedded


@pytest.mark.parametrize(
    "path",
    [
        "/v1/embeddings",  # OpenAI
        "/v1/chat/completions",
        "/v1/models/words:predict",  # TF-Serving
        "/v2/repository/models/mlp/load",  # KServe's repository extension
        "/v2/models/mlp/infer",  # KServe infer (its own ASGI path)
    ],
)
def test_a_client_leaving_mid_body_is_not_a_server_error(hard_server: Served, path: str) -> None:
    """A reset connection halfway through a body costs the server nothing: no error logged with a
    traceback (which any client could repeat to flood the log), and the next request is answered."""
    body = orjson.dumps({"model": "tiny-embed", "input": ["a sentence to embed"] * 64})
    start = hard_server.log.stat().st_size
    for _ in range(3):
        with socket.create_connection(hard_server.address, timeout=10) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      f"content-length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 3])  # fmt: skip
            time.sleep(0.05)  # the server is reading the body
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with hard_server.log.open("rb") as f:
            f.seek(start)
            written = f.read().decode(errors="replace")
        assert "Traceback" not in written and "failed" not in written, written[-3000:]
        time.sleep(0.1)
    assert httpx.get(hard_server.url + "/health", timeout=10).json()["status"] == "ok"
