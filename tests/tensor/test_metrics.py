"""/metrics (Prometheus text) and the access log, read from a real server."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensor_fixtures import RepoFactory, Served, metric, wait_until

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0.5] * 8}]}


def scrape(url: str) -> str:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    list(text_string_to_metric_families(r.text))  # parses as Prometheus text
    return r.text


def test_request_counts_and_latency_histograms(served: Served) -> None:
    before = scrape(served.url)
    labels = {"model": "mlp", "version": "1"}
    for _ in range(3):
        assert httpx.post(served.url + "/v2/models/mlp/versions/1/infer", json=BODY).status_code == 200
    bad = {"inputs": [{**BODY["inputs"][0], "shape": [2, 5], "data": [0.5] * 10}]}  # type: ignore[dict-item]
    assert httpx.post(served.url + "/v2/models/mlp/versions/1/infer", json=bad).status_code == 400
    after = scrape(served.url)

    def delta(name: str, **extra: str) -> float:
        return metric(after, name, **labels, **extra) - metric(before, name, **labels, **extra)

    assert delta("onnxkit_requests_total", outcome="success") == 3
    assert delta("onnxkit_requests_total", outcome="failure") == 1
    assert delta("onnxkit_request_duration_seconds_count") == 3
    assert delta("onnxkit_compute_duration_seconds_count") == 3
    assert delta("onnxkit_queue_duration_seconds_count") == 3
    assert delta("onnxkit_batch_size_count") == 3
    assert delta("onnxkit_request_duration_seconds_sum") > 0


def test_loaded_models_and_versions(served: Served) -> None:
    text = scrape(served.url)
    assert metric(text, "onnxkit_model_ready", model="mlp", version="2", state="READY") == 1
    assert metric(text, "onnxkit_model_ready", model="broken", version="1", state="UNAVAILABLE") == 0
    assert 'onnxkit_model_ready{model="broken"' in text


def test_token_counters_for_language_models(tiny_chat_model: Path) -> None:
    with Server([ModelSpec("some-llm", tiny_chat_model)], port=0) as s:
        before = scrape(s.url)
        reply = httpx.post(s.url + "/v1/completions", json={"prompt": "The weather today", "max_tokens": 30},
                           timeout=60).json()  # fmt: skip
        after = scrape(s.url)
    labels = {"model": "some-llm", "version": "1"}
    assert (
        metric(after, "onnxkit_prompt_tokens_total", **labels) - metric(before, "onnxkit_prompt_tokens_total", **labels)
        == reply["usage"]["prompt_tokens"]
    )
    assert (
        metric(after, "onnxkit_generated_tokens_total", **labels)
        - metric(before, "onnxkit_generated_tokens_total", **labels)
        == reply["usage"]["completion_tokens"]
    )
    assert metric(after, "onnxkit_requests_total", **labels, outcome="success") >= 1


@pytest.mark.parametrize("json_lines", [True, False])
def test_access_log_one_line_per_request(
    make_repository: RepoFactory, caplog: pytest.LogCaptureFixture, json_lines: bool
) -> None:
    repo = make_repository(mlp=[1])
    server = Server([], port=0, repositories=(str(repo),), log_json=json_lines)
    with server as s, caplog.at_level(logging.INFO, logger="onnxkit.access"):
        caplog.clear()
        httpx.post(s.url + "/v2/models/mlp/infer?trace=1", json=BODY)
        httpx.get(s.url + "/v2/models/nope")

        def lines() -> list[str]:  # a line is written once the response is sent: allow it a moment
            return [r.getMessage() for r in caplog.records if r.name == "onnxkit.access"]

        wait_until(lambda: len(lines()) >= 2, timeout=5, what="two access log lines")
    assert len(lines()) == 2
    if json_lines:
        first, second = (json.loads(line) for line in lines())
        assert first["method"] == "POST" and first["path"] == "/v2/models/mlp/infer?trace=1"
        assert first["status"] == 200 and first["bytes"] > 0 and first["duration_ms"] > 0
        assert first["client"].startswith("127.0.0.1:")
        assert second["status"] == 404
    else:
        assert '"POST /v2/models/mlp/infer?trace=1 HTTP/1.1" 200' in lines()[0]
        assert '"GET /v2/models/nope HTTP/1.1" 404' in lines()[1]


def test_a_client_that_leaves_mid_body_is_logged_as_499_not_as_an_error(
    make_repository: RepoFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # KServe infer returns unanswered on its own; the repository route (FastAPI) meets starlette's
    # ClientDisconnect: both are the client's doing, one access line each, and no error.
    repo = make_repository(mlp=[1])
    paths = ["/v2/models/mlp/infer", "/v2/repository/models/mlp/load"]
    with Server([], port=0, repositories=(str(repo),)) as s, caplog.at_level(logging.DEBUG):
        caplog.clear()
        for path in paths:
            with socket.create_connection(("127.0.0.1", s.port), timeout=10) as conn:
                conn.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{{".encode())
                time.sleep(0.1)  # the server is reading the body
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "onnxkit.access"]

        wait_until(lambda: len(lines()) >= 2, timeout=5, what="two access log lines")
    assert sorted(line.split('"')[1] + line.split('"')[2][:5] for line in lines()) == sorted(
        f"POST {p} HTTP/1.1 499 " for p in paths), lines()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("json_lines", [True, False])
def test_onnxkit_serve_writes_its_access_lines_to_stderr(
    make_repository: RepoFactory, tmp_path: Path, json_lines: bool
) -> None:
    # The CLI's own path: no logging configured, lines written to stderr once per event-loop turn.
    repo = make_repository(mlp=[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "onnxkit", "serve", "--repository", str(repo), "--port", str(port),
           "--grpc-port", "-1", *(["--log-json"] if json_lines else [])]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "ONNXKIT_HOME": str(tmp_path)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(url), timeout=60, what="onnxkit serve to answer /health")
        with httpx.Client() as client:
            for _ in range(3):
                assert client.post(url + "/v2/models/mlp/infer", json=BODY).status_code == 200
            assert client.get(url + "/v2/models/nope").status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if "/v2/models/" in line]
    if json_lines:
        records = [json.loads(line) for line in lines]
        assert [(r["method"], r["path"], r["status"]) for r in records] == [
            *[("POST", "/v2/models/mlp/infer", 200)] * 3, ("GET", "/v2/models/nope", 404)]
    else:
        assert len(lines) == 4, err
        assert all('"POST /v2/models/mlp/infer HTTP/1.1" 200' in line for line in lines[:3])
        assert '"GET /v2/models/nope HTTP/1.1" 404' in lines[3]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
